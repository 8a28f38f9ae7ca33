import Caffe2Port
@testable import CheckpointIO
@testable import CheckpointS3
import Testing

/// Caffe2's checkpoint_test.py (the port shared with the local suite, target
/// Caffe2Port) with every `dbPrefix` on S3: a new bucket on moto per test,
/// emptied afterwards.
@Suite("Caffe2 checkpoint_test.py, ported, on S3", .serialized)
struct S3Caffe2PortTests {
    let port = Caffe2Port(
        withPrefix: { body in
            let bucket = try registerMotoStorage()
            defer {
                for key in (try? bucket.allKeys()) ?? [] {
                    let slash = key.lastIndex(of: "/")
                    let directory = bucket.url(slash.map { String(key[..<$0]) } ?? "")
                    try? bucket.storage.removeCheckpoint(String(key[(slash.map { key.index(after: $0) } ?? key.startIndex)...]), in: directory)
                }
            }
            try body(bucket.url("caffe2/run 1"))
        },
        exists: { path in ((try? CheckpointStorageRegistry.storage(for: "s3")) as? S3CheckpointStorage).map { (try? $0.objectExists(path)) ?? false } ?? false })

    @Test(arguments: Caffe2PortCase.allCases) func port(_ test: Caffe2PortCase) throws { try test.run(on: port) }
    @Test func minidbFilesOnS3() throws {
        try port.withPrefix { dir in
            try Caffe2Port.runWith { try CheckpointManager(dbPrefix: dir + "/single", nodeName: "trainer_0", dbType: "minidb") }
            #expect(port.exists(dir + "/single/trainer_0.4"))
        }
    }
}
