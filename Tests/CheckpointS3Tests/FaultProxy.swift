import BlobCodec
import Foundation
import Glibc

/// A fault-injecting HTTP proxy on loopback between the client and moto.
///
/// Each request is read whole, `schedule` decides its fault, and (unless the
/// fault replaces it) it is forwarded to moto on a new connection whose
/// response is read whole and sent back, damaged as the fault says. It also
/// checks every request's `x-amz-checksum-crc32c` against its body (moto does
/// not), counting the checked and the mismatched ones.
final class FaultProxy: @unchecked Sendable {
    enum Fault: Sendable {
        case internalError  // 500 InternalError
        case slowDown  // 503 SlowDown
        case resetMidBody  // half the response body, then a TCP reset
        case truncate  // the headers announce the full body, half of it comes, then a clean close
        case stall(seconds: Double)  // nothing, then a close
        case corruptByte  // one byte of the response body flipped
        case forbidden  // 403 AccessDenied (credentials that may not do this)
    }

    struct RequestInfo: Sendable {
        var method: String
        var target: String
        var index: Int
        /// The `Range` header's byte count (`bytes=A-B`), when there is one.
        var rangeLength: Int?
        /// The `Range` header, when there is one.
        var range: String?
    }

    let upstreamPort: Int
    private(set) var port: Int = 0
    private let listener: Int32
    private let lock = NSLock()
    private var schedule: @Sendable (RequestInfo) -> Fault? = { _ in nil }
    private var requestCount = 0
    private(set) var checksumsChecked = 0
    private(set) var checksumMismatches = 0
    private(set) var faultsInjected = 0
    private var stopped = false

    init(upstreamPort: Int) throws {
        self.upstreamPort = upstreamPort
        listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(listener, 64) == 0 else { throw POSIXError(.EADDRINUSE) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.start()
    }

    deinit { stop() }

    var endpoint: String { "http://127.0.0.1:\(port)" }

    /// Makes the proxy a store without conditional writes: `If-Match` and
    /// `If-None-Match` are dropped from every forwarded request.
    func setIgnoresConditionalWrites(_ ignores: Bool) {
        lock.withLock { ignoresConditionalWrites = ignores }
    }
    private var ignoresConditionalWrites = false

    /// Sets which requests fail and how (nil: forwarded untouched).
    func setSchedule(_ schedule: @escaping @Sendable (RequestInfo) -> Fault?) {
        lock.withLock { self.schedule = schedule }
    }

    func stop() {
        let wasStopped = lock.withLock { () -> Bool in
            let was = stopped
            stopped = true
            return was
        }
        if !wasStopped {
            shutdown(listener, Int32(SHUT_RDWR))
            close(listener)
        }
    }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if lock.withLock({ stopped }) { return }
                continue
            }
            let thread = Thread { [self] in serve(client) }
            thread.start()
        }
    }

    /// Reads until `buffer` holds `\r\n\r\n`; returns the header block and what followed, or nil at EOF.
    private static func readHead(_ fd: Int32, _ buffer: inout [UInt8]) -> (head: String, rest: [UInt8])? {
        let marker: [UInt8] = [13, 10, 13, 10]
        while true {
            if buffer.count >= 4, let end = (0...(buffer.count - 4)).first(where: { Array(buffer[$0..<($0 + 4)]) == marker }) {
                let head = String(decoding: buffer[..<end], as: UTF8.self)
                return (head, Array(buffer[(end + 4)...]))
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return nil }
            buffer += chunk[..<n]
        }
    }

    private static func readExactly(_ fd: Int32, count: Int, startingWith initial: [UInt8]) -> [UInt8]? {
        var body = initial
        body.reserveCapacity(count)
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while body.count < count {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, min($0.count, count - body.count)) }
            if n <= 0 { return nil }
            body += chunk[..<n]
        }
        return body
    }

    private static func readToEnd(_ fd: Int32, startingWith initial: [UInt8]) -> [UInt8] {
        var body = initial
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return body }
            body += chunk[..<n]
        }
    }

    @discardableResult
    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return false }
            done += n
        }
        return true
    }

    private static func headers(_ head: String) -> (firstLine: String, fields: [(String, String)]) {
        var lines = head.components(separatedBy: "\r\n")
        let first = lines.removeFirst()
        return (first, lines.compactMap { line in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        })
    }

    private func serve(_ client: Int32) {
        defer { close(client) }
        var pending: [UInt8] = []
        while let (head, rest) = FaultProxy.readHead(client, &pending) {
            let (requestLine, fields) = FaultProxy.headers(head)
            let parts = requestLine.split(separator: " ")
            guard parts.count >= 2 else { return }
            let method = String(parts[0]), target = String(parts[1])
            let length = Int(fields.first { $0.0.lowercased() == "content-length" }?.1 ?? "0") ?? 0
            guard let all = FaultProxy.readExactly(client, count: length, startingWith: rest) else { return }
            let body = Array(all[..<length])
            pending = Array(all[length...])
            if let expected = fields.first(where: { $0.0.lowercased() == "x-amz-checksum-crc32c" })?.1 {
                let crc = body.withUnsafeBytes { CRC32C.checksum($0) }
                let actual = Data([UInt8(crc >> 24), UInt8((crc >> 16) & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8(crc & 0xFF)]).base64EncodedString()
                lock.withLock {
                    checksumsChecked += 1
                    if actual != expected { checksumMismatches += 1 }
                }
            }
            let fault = lock.withLock { () -> Fault? in
                var rangeLength: Int?
                let rangeHeader = fields.first(where: { $0.0.lowercased() == "range" })?.1
                if let range = fields.first(where: { $0.0.lowercased() == "range" })?.1, range.hasPrefix("bytes="),
                   let dash = range.firstIndex(of: "-"), let a = Int(range[range.index(range.startIndex, offsetBy: 6)..<dash]),
                   let b = Int(range[range.index(after: dash)...]) {
                    rangeLength = b - a + 1
                }
                let info = RequestInfo(method: method, target: target, index: requestCount, rangeLength: rangeLength, range: rangeHeader)
                requestCount += 1
                let fault = schedule(info)
                if fault != nil { faultsInjected += 1 }
                return fault
            }
            switch fault {
            case .internalError?, .slowDown?, .forbidden?:
                let (status, code) = fault.map { fault -> (String, String) in
                    switch fault {
                    case .slowDown: return ("503 Slow Down", "SlowDown")
                    case .forbidden: return ("403 Forbidden", "AccessDenied")
                    default: return ("500 Internal Server Error", "InternalError")
                    }
                }!
                let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>\(code)</Code><Message>injected</Message></Error>"
                FaultProxy.writeAll(client, Array("HTTP/1.1 \(status)\r\nContent-Type: application/xml\r\nContent-Length: \(xml.utf8.count)\r\n\r\n\(xml)".utf8))
                continue
            case let .stall(seconds)?:
                Thread.sleep(forTimeInterval: seconds)
                return
            default:
                break
            }
            guard var response = forward(method: method, target: target, fields: fields, body: body) else { return }
            let isHead = method == "HEAD"
            switch fault {
            case .resetMidBody?:
                FaultProxy.writeAll(client, Array(response.head.utf8) + response.body.prefix(response.body.count / 2))
                var linger = linger(l_onoff: 1, l_linger: 0)
                setsockopt(client, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<linger>.size))
                return
            case .truncate?:
                FaultProxy.writeAll(client, Array(response.head.utf8) + response.body.prefix(response.body.count / 2))
                return
            case .corruptByte?:
                if !response.body.isEmpty { response.body[response.body.count / 2] ^= 0x40 }
            default:
                break
            }
            guard FaultProxy.writeAll(client, Array(response.head.utf8) + (isHead ? [] : response.body)) else { return }
        }
    }

    /// Sends the request to moto on a new connection; returns the response head (re-framed with a Content-Length) and body.
    private func forward(method: String, target: String, fields: [(String, String)], body: [UInt8]) -> (head: String, body: [UInt8])? {
        let upstream = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(upstream) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(upstreamPort).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(upstream, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else { return nil }
        var head = "\(method) \(target) HTTP/1.1\r\n"
        let dropped: Set<String> = lock.withLock { ignoresConditionalWrites } ? ["connection", "if-match", "if-none-match"] : ["connection"]
        for (name, value) in fields where !dropped.contains(name.lowercased()) { head += "\(name): \(value)\r\n" }
        head += "Connection: close\r\n\r\n"
        guard FaultProxy.writeAll(upstream, Array(head.utf8) + body) else { return nil }
        var buffer: [UInt8] = []
        guard let (responseHead, rest) = FaultProxy.readHead(upstream, &buffer) else { return nil }
        let (statusLine, responseFields) = FaultProxy.headers(responseHead)
        let declared = responseFields.first { $0.0.lowercased() == "content-length" }.flatMap { Int($0.1) }
        let responseBody: [UInt8]
        if method == "HEAD" {
            responseBody = []
        } else if let declared {
            guard let all = FaultProxy.readExactly(upstream, count: declared, startingWith: rest) else { return nil }
            responseBody = Array(all.prefix(declared))
        } else {
            responseBody = FaultProxy.readToEnd(upstream, startingWith: rest)
        }
        var out = statusLine.replacingOccurrences(of: "HTTP/1.0", with: "HTTP/1.1") + "\r\n"
        for (name, value) in responseFields where !["connection", "content-length", "transfer-encoding", "keep-alive"].contains(name.lowercased()) {
            out += "\(name): \(value)\r\n"
        }
        out += "Content-Length: \(method == "HEAD" ? (declared ?? 0) : responseBody.count)\r\n\r\n"
        return (out, responseBody)
    }
}
