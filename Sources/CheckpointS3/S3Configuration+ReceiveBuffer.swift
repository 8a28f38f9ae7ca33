import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension S3Configuration {
    /// How large each connection's socket receive buffer (`SO_RCVBUF`) is.
    ///
    /// Why it matters on loopback: when the server runs on the same kernel (a
    /// local MinIO or moto, a sidecar), Linux's automatic sizing measures a
    /// round trip of microseconds and keeps the receive window small. The
    /// server's sends then stall on the window, and each acknowledgement this
    /// client sends as it reads pushes the server's queued data through the
    /// kernel in the client's own system call: the client pays the server's
    /// send. A fixed window of a few MiB lets the server's own `send` deliver
    /// the data. Measured on Linux 6.18 loading 256 MiB from moto on loopback
    /// (`ckpt s3-bench load --resident`, 6 alternating runs each): client
    /// CPU 0.118–0.127 s with 4 MiB against 0.149–0.161 s with automatic
    /// sizing, the same wall time.
    ///
    /// What the kernel grants: twice the size asked for after capping it at
    /// `net.core.rmem_max`, and it stops sizing that connection's buffer
    /// itself. With the common default `rmem_max` of 208 KiB, asking for
    /// 4 MiB gives 416 KiB, which measured neither faster nor slower than
    /// automatic sizing (4 alternating runs); the gain needs `rmem_max` of a
    /// few MiB (`sysctl net.core.rmem_max`). The window clamp
    /// (`TCP_WINDOW_CLAMP`) is raised to the same size, so that kernels which
    /// keep the clamp of the handshake do not hold the window small.
    ///
    /// Over a real network the sender is another machine and automatic sizing
    /// is what a long fat link needs, so it is kept there. A server in a
    /// container on the same host, reached through a bridge address rather
    /// than loopback, shares the kernel too: set ``fixed(_:)`` (for example
    /// `.fixed(4 << 20)`) for it.
    public enum ReceiveBuffer: Sendable, Equatable {
        /// ``loopbackBytes`` when the endpoint is on this host by its address
        /// or name (see ``isLocal(host:)``), the kernel's automatic sizing otherwise.
        case automatic
        /// The kernel's automatic sizing, whatever the endpoint.
        case kernel
        /// A size in bytes (``fixedRange``), asked for whatever the endpoint.
        case fixed(Int)

        /// The size ``automatic`` asks for on this host.
        public static let loopbackBytes = 4 << 20
        /// The sizes ``fixed(_:)`` accepts: 64 KiB...1 GiB.
        public static let fixedRange = (1 << 16)...(1 << 30)

        /// The bytes to ask `SO_RCVBUF` for when connecting to `endpoint`
        /// (nil: leave the kernel's automatic sizing on).
        public func bytes(forEndpoint endpoint: String?) -> Int? {
            switch self {
            case .kernel: return nil
            case .fixed(let bytes): return bytes
            case .automatic:
                guard let endpoint, let host = URLComponents(string: endpoint)?.host else { return nil }
                return ReceiveBuffer.isLocal(host: host) ? ReceiveBuffer.loopbackBytes : nil
            }
        }

        /// Whether `host` names this machine without a lookup: `localhost` or a
        /// name under `.localhost` (RFC 6761), an IPv4 address in 127.0.0.0/8 or
        /// `0.0.0.0`, or the IPv6 `::1`, `::` or an IPv4-mapped 127.0.0.0/8
        /// address. A trailing dot and IPv6 brackets are ignored. Other names
        /// that happen to resolve to this host (Debian's 127.0.1.1 hostname)
        /// are not looked up: set ``fixed(_:)`` for them.
        public static func isLocal(host: String) -> Bool {
            var name = host.lowercased()
            if name.hasPrefix("["), name.hasSuffix("]") { name = String(name.dropFirst().dropLast()) }
            if name.hasSuffix(".") { name = String(name.dropLast()) }
            if name == "localhost" || name.hasSuffix(".localhost") { return true }
            // inet_pton takes only the full forms: four decimal parts, or IPv6 text.
            var v4 = in_addr()
            if inet_pton(AF_INET, name, &v4) == 1 {
                let octets = withUnsafeBytes(of: v4) { Array($0) }
                return octets[0] == 127 || octets == [0, 0, 0, 0]
            }
            var v6 = in6_addr()
            guard inet_pton(AF_INET6, name, &v6) == 1 else { return false }
            let bytes = withUnsafeBytes(of: v6) { Array($0) }
            if bytes[0..<15].allSatisfy({ $0 == 0 }) { return bytes[15] <= 1 }  // :: or ::1
            return bytes[0..<10].allSatisfy { $0 == 0 } && bytes[10...12] == [0xFF, 0xFF, 127]  // ::ffff:127.x.x.x
        }

        /// Parses `CKPT_S3_RECEIVE_BUFFER`: `auto`, `kernel`, or a size in bytes
        /// with an optional `K`, `M` or `G` suffix (powers of 1024); ASCII only,
        /// surrounding white space ignored. The size's range is checked by
        /// ``S3Configuration/validate()``.
        public init?(parsing text: String) {
            let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !value.isEmpty, value.allSatisfy(\.isASCII) else { return nil }
            let lowered = value.lowercased()
            switch lowered {
            case "auto": self = .automatic
            case "kernel": self = .kernel
            default:
                let units: [Character: Int] = ["k": 1 << 10, "m": 1 << 20, "g": 1 << 30]
                var digits = Substring(lowered)
                var unit = 1
                if let last = digits.last, let scale = units[last] {
                    unit = scale
                    digits = digits.dropLast()
                }
                guard !digits.isEmpty, digits.allSatisfy(\.isNumber), let number = Int(digits) else { return nil }
                let (bytes, overflow) = number.multipliedReportingOverflow(by: unit)
                guard !overflow else { return nil }
                self = .fixed(bytes)
            }
        }
    }
}
