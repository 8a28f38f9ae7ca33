@testable import CheckpointIO
@testable import CheckpointS3
import Foundation
import Testing

/// moto's S3 server (a real HTTP server speaking the S3 REST API) on a free
/// loopback port, started once per test process when a test first needs it,
/// and killed when the process exits (the server also exits by itself when
/// its parent goes away, so a killed test run leaves nothing behind).
final class MotoServer: @unchecked Sendable {
    let port: Int
    let process: Process
    var endpoint: String { "http://127.0.0.1:\(port)" }

    /// The server of this test process; throws when moto cannot be started.
    static func shared() throws -> MotoServer {
        try lock.withLock {
            if let server = instance { return server }
            let server = try MotoServer()
            instance = server
            atexit { MotoServer.instance?.process.terminate() }
            return server
        }
    }

    nonisolated(unsafe) private static var instance: MotoServer?
    private static let lock = NSLock()

    private init() throws {
        // The wrapper watches its parent and exits with it; moto's own server runs in the main thread.
        let script = """
        import os, socket, sys, threading, time
        parent = os.getppid()
        def watch():
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(0)
        threading.Thread(target=watch, daemon=True).start()
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        print(port, flush=True)
        from moto.server import main
        main(["-H", "127.0.0.1", "-p", str(port)])
        """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        self.process = process
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            line.append(chunk)
        }
        guard let port = Int(String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) else {
            process.terminate()
            throw CheckpointError(.invalidState(reason: "moto did not start (is moto[server] installed? scripts/bootstrap.sh installs it)"))
        }
        self.port = port
        // Wait until it answers.
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if MotoServer.answers(port: port) { return }
            Thread.sleep(forTimeInterval: 0.1)
        }
        process.terminate()
        throw CheckpointError(.invalidState(reason: "moto did not answer on port \(port) within 30 s"))
    }

    static func answers(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
    }

    /// A configuration for this server with test credentials (moto checks no signature).
    func configuration(endpoint: String? = nil) -> S3Configuration {
        var configuration = S3Configuration(endpoint: endpoint ?? self.endpoint, region: "us-east-1",
                                            credentials: S3Credentials(accessKeyID: "testing", secretAccessKey: "testing"))
        configuration.retry = S3RetryPolicy(maximumAttempts: 6, baseDelay: 0.01, maximumDelay: 0.2)
        return configuration
    }
}

/// A new bucket on the shared moto server, and a storage talking to it.
struct TestBucket {
    let name: String
    let storage: S3CheckpointStorage
    let server: MotoServer

    init(configure: (inout S3Configuration) -> Void = { _ in }) throws {
        server = try MotoServer.shared()
        var configuration = server.configuration()
        configure(&configuration)
        storage = try S3CheckpointStorage(configuration: configuration)
        name = "test-" + UUID().uuidString.lowercased().prefix(18)
        try storage.createBucket(name)
    }

    func url(_ key: String) -> String { "s3://\(name)/\(key)" }

    /// Every key in the bucket (recursively).
    func allKeys() throws -> [String] {
        var keys: [String] = []
        var token: String?
        repeat {
            var query = [("list-type", "2")]
            if let token { query.append(("continuation-token", token)) }
            let response = try storage.client.send(S3Request(operation: "ListObjectsV2", method: .GET, bucket: name, key: "", query: query))
            keys += S3XML.values("Key", in: response.bodyText)
            token = S3XML.value("IsTruncated", in: response.bodyText) == "true" ? S3XML.value("NextContinuationToken", in: response.bodyText) : nil
        } while token != nil
        return keys
    }

    /// The keys of the open multipart uploads.
    func openUploads() throws -> [String] {
        let response = try storage.client.send(S3Request(operation: "ListMultipartUploads", method: .GET, bucket: name, key: "", query: [("uploads", "")]))
        return S3XML.blocks("Upload", in: response.bodyText).compactMap { S3XML.value("Key", in: $0) }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a failure reproduces.
func patternBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed | 1
    var bytes = [UInt8](repeating: 0, count: count)
    bytes.withUnsafeMutableBytes { buffer in
        var i = 0
        while i + 8 <= count {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            buffer.storeBytes(of: state, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < count {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            buffer[i] = UInt8(truncatingIfNeeded: state)
            i += 1
        }
    }
    return bytes
}
