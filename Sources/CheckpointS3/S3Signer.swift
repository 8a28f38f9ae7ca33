import Crypto
import Foundation

/// AWS Signature Version 4 for S3 requests (header-based), with swift-crypto's
/// SHA-256 and HMAC.
///
/// The canonical request is: the method; the URI path exactly as sent (each
/// key segment percent-encoded once, S3 does not normalise it); the query
/// parameters encoded and sorted; every header given, lower-cased, with
/// whitespace runs folded; the signed header names; and the payload hash
/// (hex SHA-256 of the body, or `UNSIGNED-PAYLOAD`). Checked against botocore's
/// `S3SigV4Auth` in the tests.
public struct S3Signer: Sendable {
    public let credentials: S3Credentials
    public let region: String
    public let service: String

    /// The payload hash of a request whose body is not hashed (its integrity is
    /// carried by `x-amz-checksum-crc32c` instead).
    public static let unsignedPayload = "UNSIGNED-PAYLOAD"
    /// The hex SHA-256 of an empty body.
    public static let emptyPayloadHash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    public init(credentials: S3Credentials, region: String, service: String = "s3") {
        self.credentials = credentials
        self.region = region
        self.service = service
    }

    /// Signs a request: returns `headers` plus `x-amz-date`, `x-amz-content-sha256`,
    /// `x-amz-security-token` (with a session token) and `authorization`.
    ///
    /// - Parameters:
    ///   - path: the URI path as sent, already percent-encoded (``encodePath(_:)``).
    ///   - query: the query parameters, not encoded (a parameter without a value has "").
    ///   - headers: the headers to sign, `host` included.
    ///   - payloadHash: ``hexSHA256(_:)`` of the body, or ``unsignedPayload``.
    ///   - date: the signing time.
    public func sign(method: String, path: String, query: [(String, String)], headers: [(String, String)],
                     payloadHash: String, date: Date) -> [(String, String)] {
        let timestamp = S3Signer.timestamp(date)
        let day = String(timestamp.prefix(8))
        var all = headers
        all.append(("x-amz-date", timestamp))
        all.append(("x-amz-content-sha256", payloadHash))
        if let token = credentials.sessionToken { all.append(("x-amz-security-token", token)) }

        // Header names lower-cased and sorted; repeated names joined with commas.
        var canonical: [String: [String]] = [:]
        for (name, value) in all {
            canonical[name.lowercased(), default: []].append(value.split(whereSeparator: { $0 == " " || $0 == "\t" }).joined(separator: " "))
        }
        let names = canonical.keys.sorted()
        let signedHeaders = names.joined(separator: ";")
        let canonicalHeaders = names.map { "\($0):\(canonical[$0]!.joined(separator: ","))\n" }.joined()
        let canonicalRequest = [method.uppercased(), path, S3Signer.canonicalQuery(query), canonicalHeaders, signedHeaders, payloadHash]
            .joined(separator: "\n")
        let scope = "\(day)/\(region)/\(service)/aws4_request"
        let stringToSign = ["AWS4-HMAC-SHA256", timestamp, scope, S3Signer.hexSHA256(Array(canonicalRequest.utf8))].joined(separator: "\n")

        var key = SymmetricKey(data: Array("AWS4\(credentials.secretAccessKey)".utf8))
        for part in [day, region, service, "aws4_request"] {
            key = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: Array(part.utf8), using: key)))
        }
        let signature = HMAC<SHA256>.authenticationCode(for: Array(stringToSign.utf8), using: key).hexString
        all.append(("authorization", "AWS4-HMAC-SHA256 Credential=\(credentials.accessKeyID)/\(scope), SignedHeaders=\(signedHeaders), Signature=\(signature)"))
        return all
    }

    /// `YYYYMMDD'T'HHMMSS'Z'` in UTC.
    static func timestamp(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let c = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
        func two(_ v: Int?) -> String { let v = v ?? 0; return v < 10 ? "0\(v)" : "\(v)" }
        return "\(c.year ?? 1970)\(two(c.month))\(two(c.day))T\(two(c.hour))\(two(c.minute))\(two(c.second))Z"
    }

    /// The query string as sent and as signed: each name and value encoded
    /// (``encode(_:)``), sorted by name then value, `name=value` joined with `&`.
    public static func canonicalQuery(_ query: [(String, String)]) -> String {
        query.map { (encode($0.0), encode($0.1)) }
            .sorted { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 }
            .map { "\($0.0)=\($0.1)" }
            .joined(separator: "&")
    }

    /// Percent-encodes every byte of the UTF-8 form except the unreserved
    /// characters `A-Z a-z 0-9 - _ . ~` (RFC 3986), upper-case hex.
    public static func encode(_ text: String, keepingSlash: Bool = false) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        let hex = Array("0123456789ABCDEF")
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            case UInt8(ascii: "/") where keepingSlash:
                out.append("/")
            default:
                out.append("%")
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 15)])
            }
        }
        return out
    }

    /// An object key as a URI path: `/` kept, everything else as ``encode(_:keepingSlash:)``.
    public static func encodePath(_ key: String) -> String { encode(key, keepingSlash: true) }

    /// One path segment (a bucket name).
    static func encodePathSegment(_ segment: String) -> String { encode(segment) }

    /// The lower-case hex SHA-256 of `bytes`.
    public static func hexSHA256(_ bytes: some DataProtocol) -> String { SHA256.hash(data: bytes).hexString }
}

extension Sequence where Element == UInt8 {
    var hexString: String {
        let hex = Array("0123456789abcdef")
        var out = ""
        for byte in self {
            out.append(hex[Int(byte >> 4)])
            out.append(hex[Int(byte & 15)])
        }
        return out
    }
}
