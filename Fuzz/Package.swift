// swift-tools-version: 6.1
import PackageDescription

// libFuzzer targets for the readers. Build and run them with ../scripts/fuzz.sh
// (it passes -sanitize=fuzzer,address and the lld linker; gold crashes on them).
let package = Package(
    name: "CheckpointEngineFuzz",
    dependencies: [.package(name: "CheckpointEngine", path: "..")],
    targets: [
        .target(name: "FuzzSupport"),
        // Container files: open + list + read every blob + verify.
        .executableTarget(name: "ContainerFuzzer", dependencies: ["FuzzSupport", .product(name: "CheckpointIO", package: "CheckpointEngine")]),
        // safetensors, .npy, .npz and Caffe2 minidb: the first input byte picks the reader.
        .executableTarget(name: "FormatFuzzer", dependencies: ["FuzzSupport", .product(name: "CheckpointIO", package: "CheckpointEngine")]),
    ],
    swiftLanguageModes: [.v6]
)
