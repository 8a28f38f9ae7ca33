import CheckpointIO
import Foundation
import Testing

// Issue 19 point 2: node names and epochs read from checkpoint_metadata.json
// were not validated, so retention deleted files outside the prefix. Public API only.

/// A checkpoint_metadata.json with `body` after the fixed members.
let metadataHead = #"{"format":"checkpoint-metadata","version":1,"db_type":"ckpt","#

/// Writes each `(body, says)` as the metadata file and checks that reading it
/// fails with an `invalidField` naming the file and saying `says`, and that
/// `write` refuses it too.
func expectRejected(_ cases: [(body: String, says: String)], sourceLocation: SourceLocation = #_sourceLocation) throws {
    try withTemporaryDirectory { dir in
        let handler = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 1))
        try handler.setParams(dbPrefix: dir, dbType: "ckpt", nodeNames: ["n"], pathPrefix: nil, pathType: nil)
        let path = try #require(handler.metadataPath)
        for (body, says) in cases {
            try writeBytes(path, Array((metadataHead + body).utf8))
            #expect(throws: CheckpointError.self, "\(body)", sourceLocation: sourceLocation) { try handler.lastEpoch(userEpoch: nil) }
            do {
                _ = try handler.completeEpochs()
                Issue.record("\(body) was accepted", sourceLocation: sourceLocation)
            } catch let error as CheckpointError {
                #expect(error.path == path && "\(error)".contains(says), "\(body): \(error)", sourceLocation: sourceLocation)
                guard case .invalidField(field: "checkpoint metadata", _) = error.code else {
                    Issue.record("\(body): \(error.code)", sourceLocation: sourceLocation)
                    continue
                }
            }
            #expect(throws: CheckpointError.self, "\(body)", sourceLocation: sourceLocation) { try handler.write(epoch: 5) }
        }
    }
}

@Suite("Issue 19: node names from the metadata file")
struct MetadataNodeNameTests {
    /// The issue's steps: a record naming node `../outside/data` and a file
    /// `PREFIX/../outside/data.0`; a manager with keepLatest 1 saves and
    /// records epoch 1. Before: retention unlinked `outside/data.0`.
    @Test func aMetadataFileNamingANodeOutsideThePrefixDeletesNothing() throws {
        try withTemporaryDirectory { root in
            let prefix = root + "/prefix", metadata = prefix + "/checkpoint_metadata.json"
            try FileManager.default.createDirectory(atPath: root + "/outside", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: prefix, withIntermediateDirectories: true)
            try writeBytes(root + "/outside/data.0", [1, 2, 3])
            try writeBytes(metadata, Array(#"{"format":"checkpoint-metadata","version":1,"db_type":"ckpt","resumed_from":null,"epochs":[{"epoch":0,"nodes":["../outside/data"],"metric":null}]}"#.utf8) + [0x0A])
            let before = try fileBytes(metadata)
            let handler = DurableMetadataHandler(retention: RetentionPolicy(keepLatest: 1))
            let manager = try CheckpointManager(dbPrefix: prefix, nodeName: "trainer_0", metadataHandler: handler,
                                                workspace: Workspace(["w": Tensor(scalar: Int64(1))]))
            try manager.initialize()
            try manager.save(epoch: 1)
            #expect { try manager.writeCheckpointMetadata(epoch: 1) } throws: { error in
                let error = error as? CheckpointError
                return error?.path == metadata && "\(error!)".contains("'../outside/data'")
            }
            #expect(try fileBytes(root + "/outside/data.0") == [1, 2, 3])
            #expect(try fileBytes(metadata) == before)
            #expect { try handler.lastEpoch(userEpoch: nil) } throws: { ($0 as? CheckpointError)?.path == metadata }
        }
    }

    @Test func malformedMetadataIsRejectedNamingTheFileAndWhatIsWrong() throws {
        try expectRejected([
            (#""resumed_from":null,"epochs":[{"epoch":0,"nodes":[""],"metric":null}]}"#, "node ''"),
            (#""resumed_from":null,"epochs":[{"epoch":0,"nodes":["a/b"],"metric":null}]}"#, "node 'a/b'"),
            (#""resumed_from":null,"epochs":[{"epoch":0,"nodes":[".."],"metric":null}]}"#, "node '..'"),
            (#""resumed_from":null,"epochs":[{"epoch":0,"nodes":["x\u0000y"],"metric":null}]}"#, "node 'x"),
            (#""resumed_from":null,"epochs":[{"epoch":-1,"nodes":["n"],"metric":null}]}"#, "epoch -1"),
            (#""resumed_from":null,"epochs":[{"epoch":"3","nodes":["n"],"metric":null}]}"#, "epoch \"3\""),
            (#""resumed_from":null,"epochs":[{"epoch":2.5,"nodes":["n"],"metric":null}]}"#, "epoch 2.5"),
            (#""resumed_from":null,"epochs":[{"epoch":3,"nodes":["n"]},{"epoch":3,"nodes":["n"]}]}"#, "recorded twice"),
            (#""resumed_from":"x","epochs":[]}"#, "resumed_from"),
            (#""resumed_from":-4,"epochs":[]}"#, "resumed_from"),
        ])
    }

    @Test func metadataFilesOfTheCurrentVersionAreStillRead() throws {
        try withTemporaryDirectory { dir in
            let handler = DurableMetadataHandler()
            try handler.setParams(dbPrefix: dir, dbType: "ckpt", nodeNames: ["n"], pathPrefix: nil, pathType: nil)
            let path = try #require(handler.metadataPath)
            // As the previous version wrote it (and with a member a later version may add).
            for text in [
                #"{"format":"checkpoint-metadata","version":1,"db_type":"ckpt","resumed_from":null,"epochs":[{"epoch":0,"nodes":["n"],"metric":0.0},{"epoch":1,"nodes":["n"],"metric":0.5}]}"#,
                #"{"format":"checkpoint-metadata","version":1,"db_type":"ckpt","resumed_from":0,"epochs":[{"epoch":0,"nodes":["n"],"metric":0.0},{"epoch":1,"nodes":["n"],"metric":0.5}],"future":{"x":[1]}}"#,
            ] {
                try writeBytes(path, Array(text.utf8) + [0x0A])
                #expect(try handler.completeEpochs() == [.init(epoch: 0, nodes: ["n"], metric: 0), .init(epoch: 1, nodes: ["n"], metric: 0.5)])
            }
        }
    }

    /// Whatever a caller passes, storage removes nothing outside the directory.
    @Test func storageRefusesToRemoveAnythingOutsideTheDirectory() throws {
        try withTemporaryDirectory { root in
            try FileManager.default.createDirectory(atPath: root + "/prefix/sub", withIntermediateDirectories: true)
            try FileManager.default.createDirectory(atPath: root + "/outside", withIntermediateDirectories: true)
            try writeBytes(root + "/outside/data.0", [1])
            try writeBytes(root + "/prefix/sub/n.1", [2])
            try writeBytes(root + "/prefix/n.1", [3])
            let storage = LocalCheckpointStorage()
            for name in ["../outside/data.0", "..", ".", "", "sub/n.1", "/etc/hostname", root + "/outside/data.0", "n.1\u{0}x"] {
                #expect(throws: CheckpointError.self, "\(name)") { try storage.removeCheckpoint(name, in: root + "/prefix") }
            }
            #expect(fileExists(root + "/outside/data.0") && fileExists(root + "/prefix/sub/n.1") && fileExists(root + "/prefix/n.1"))
            try storage.removeCheckpoint("n.1", in: root + "/prefix")
            try storage.removeCheckpoint("n.1", in: root + "/prefix")  // already gone: not an error
            #expect(!fileExists(root + "/prefix/n.1"))
        }
    }
}
