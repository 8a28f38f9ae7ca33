# The two commands of the README, plus the benchmarks.
.PHONY: demo test bench

# The main job: a training job checkpointed by JobRunner + CheckpointManager, crashed mid-save, resumed and checked (release build).
demo:
	swift run -c release ckpt demo

# The test suite (Swift Testing).
test:
	swift test

# Throughput benchmarks (ordo-one/benchmark, release build); see Benchmarks/.
bench:
	cd Benchmarks && swift package benchmark --target CodecBenchmarks
	cd Benchmarks && swift package benchmark --target ContainerBenchmarks
	cd Benchmarks && swift package benchmark --target ManagerBenchmarks
