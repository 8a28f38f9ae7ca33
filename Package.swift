// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "CheckpointEngine",
    products: [
        .library(name: "BlobCodec", targets: ["BlobCodec"]),
        .library(name: "CheckpointIO", targets: ["CheckpointIO"]),
        // Checkpoints on S3-compatible object stores; brings an HTTP stack, so it is its own product.
        .library(name: "CheckpointS3", targets: ["CheckpointS3"]),
        .executable(name: "ckpt", targets: ["ckpt"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.12.3"..<"4.0.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // `swift package generate-documentation` (DocC catalogs under Sources/*/*.docc); a build-time plugin only.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
    ],
    targets: [
        // Debian's compression libraries, module maps only.
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd", providers: [.apt(["libzstd-dev"])]),
        // Hot C loops: CRC32C (SSE4.2 + portable) and byte shuffle. Runtime CPU detection, no flags.
        .target(name: "CCheckpointKernels"),
        // Bytes in, bytes out: dtypes, shapes, blob headers, chunked codecs, checksums. No file I/O.
        .target(name: "BlobCodec", dependencies: ["CCheckpointKernels", "CLZ4", "CZlib", "CZstd"]),
        // Files: the container format, safetensors, and (Manager/) the Caffe2-style
        // checkpoint managers on top. One module, so `import CheckpointIO` is the whole API.
        .target(name: "CheckpointIO", dependencies: [
            "BlobCodec", "CCheckpointKernels",
            .product(name: "Logging", package: "swift-log"),
        ]),
        // `CheckpointStorage` on S3-compatible object stores (path type "s3"): SigV4 with
        // swift-crypto, HTTP through async-http-client.
        .target(name: "CheckpointS3", dependencies: [
            "CheckpointIO", "BlobCodec", "CCheckpointKernels",
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The command line: parsing and printing only.
        .executableTarget(name: "ckpt", dependencies: [
            "CheckpointIO", "CheckpointS3",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        // The child process of the crash tests: a training loop that can be killed at any moment.
        .executableTarget(name: "checkpoint-stress", dependencies: ["CheckpointIO"]),
        .testTarget(name: "BlobCodecTests", dependencies: ["BlobCodec", "CCheckpointKernels"]),
        .testTarget(name: "CheckpointIOTests", dependencies: ["CheckpointIO", "CZlib"], exclude: ["Fixtures"]),
        // Caffe2's checkpoint_test.py ported for any storage: run on local disk and on S3 (not a product).
        .target(name: "Caffe2Port", dependencies: ["CheckpointIO"], path: "Tests/Caffe2Port"),
        .testTarget(name: "CheckpointManagerTests", dependencies: ["CheckpointIO", "Caffe2Port", "checkpoint-stress"]),
        // Runs the built `ckpt` binary, and the real Python safetensors / numpy packages for interop.
        // Against a real S3 server (moto) on loopback, started by the suite; SigV4 checked against botocore.
        .testTarget(name: "CheckpointS3Tests", dependencies: [
            "CheckpointS3", "CheckpointIO", "Caffe2Port", "ckpt",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .testTarget(name: "CLITests", dependencies: ["CheckpointIO", "ckpt"]),
    ],
    swiftLanguageModes: [.v6]
)
