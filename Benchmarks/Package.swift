// swift-tools-version: 6.1
import PackageDescription

// Benchmarks of the checkpoint engine (ordo-one/benchmark). Run from this folder:
//   swift package benchmark --target CodecBenchmarks
//   swift package benchmark --target ContainerBenchmarks
//   swift package benchmark --target ManagerBenchmarks
let package = Package(
    name: "CheckpointEngineBenchmarks",
    dependencies: [
        .package(name: "CheckpointEngine", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        // Direct access to liblz4 and libzstd for the baselines ("the library called directly").
        .systemLibrary(name: "CLZ4Baseline", path: "Sources/CLZ4Baseline", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CZstdBaseline", path: "Sources/CZstdBaseline", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        .executableTarget(
            name: "CodecBenchmarks",
            dependencies: [
                .product(name: "BlobCodec", package: "CheckpointEngine"),
                .product(name: "Benchmark", package: "benchmark"),
                "CLZ4Baseline", "CZstdBaseline",
            ],
            path: "Benchmarks/CodecBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "ContainerBenchmarks",
            dependencies: [
                .product(name: "CheckpointIO", package: "CheckpointEngine"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/ContainerBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "ManagerBenchmarks",
            dependencies: [
                .product(name: "CheckpointIO", package: "CheckpointEngine"),
                .product(name: "Benchmark", package: "benchmark"),
            ],
            path: "Benchmarks/ManagerBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
