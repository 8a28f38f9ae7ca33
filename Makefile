# The two commands of the README, plus the benchmarks. Both start with
# scripts/bootstrap.sh, which installs the Debian and Python packages the build
# and tests need (or prints the one command to run when it cannot).
.PHONY: bootstrap demo test bench docs

bootstrap:
	@scripts/bootstrap.sh

# The main job: a training job checkpointed by JobRunner + CheckpointManager, crashed mid-save, resumed and checked (release build).
demo: bootstrap
	swift run -c release ckpt demo

# The test suite (Swift Testing).
test: bootstrap
	swift test

# DocC documentation of the library modules (Sources/*/*.docc and the doc
# comments), archives in .build/plugins/Swift-DocC/outputs/. Any DocC warning
# (a broken ``Symbol`` link, an undocumented parameter) fails it.
docs: bootstrap
	swift package generate-documentation --target BlobCodec --target CheckpointIO --warnings-as-errors

# Throughput benchmarks (ordo-one/benchmark, release build); see Benchmarks/.
bench: bootstrap
	cd Benchmarks && swift package benchmark --target CodecBenchmarks
	cd Benchmarks && swift package benchmark --target ContainerBenchmarks
	cd Benchmarks && swift package benchmark --target ManagerBenchmarks
