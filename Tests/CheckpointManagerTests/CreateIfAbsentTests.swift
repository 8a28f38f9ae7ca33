import CheckpointIO
import Foundation
import Synchronization
import Testing

/// `CheckpointStorage.createFileIfAbsent`: the atomic create-if-absent the
/// distributed commit and the object-store lease are built on.
@Suite struct CreateIfAbsentTests {
    @Test func theFirstCreatorWinsAndLaterOnesChangeNothing() throws {
        try withTemporaryDirectory { dir in
            let storage = LocalCheckpointStorage()
            let path = dir + "/record.json"
            let first = try storage.createFileIfAbsent(Array("first".utf8), at: path, durability: .full)
            let second = try storage.createFileIfAbsent(Array("second".utf8), at: path, durability: .full)
            #expect(first && !second)
            let content = try storage.readFile(path, limit: 100)
            #expect(content == Array("first".utf8))
            // No temporary is left behind by either call.
            #expect(storage.listFiles(in: dir) == ["record.json"])
        }
    }

    @Test func concurrentCreatorsHaveExactlyOneWinner() throws {
        try withTemporaryDirectory { dir in
            let storage = LocalCheckpointStorage()
            for round in 0..<20 {
                let path = dir + "/race\(round)"
                let wins = Mutex(0)
                DispatchQueue.concurrentPerform(iterations: 8) { worker in
                    if (try? storage.createFileIfAbsent(Array("worker \(worker)".utf8), at: path, durability: .none)) == true {
                        wins.withLock { $0 += 1 }
                    }
                }
                #expect(wins.withLock { $0 } == 1, "round \(round)")
                let content = try #require(try storage.readFile(path, limit: 100))
                #expect(String(decoding: content, as: UTF8.self).hasPrefix("worker "))
            }
            #expect(storage.listFiles(in: dir).count == 20)
        }
    }

    @Test func aMissingDirectoryIsAnErrorNamingThePath() throws {
        try withTemporaryDirectory { dir in
            let path = dir + "/no/such/dir/record"
            #expect(throws: CheckpointError.self) {
                try LocalCheckpointStorage().createFileIfAbsent([1], at: path, durability: .full)
            }
            do {
                _ = try LocalCheckpointStorage().createFileIfAbsent([1], at: path, durability: .full)
            } catch let error as CheckpointError {
                #expect("\(error)".contains("no/such/dir"))
            }
        }
    }
}
