@testable import CheckpointIO
@testable import CheckpointS3
import Foundation
import NIOCore
import NIOHTTP1
import Testing

/// Runs a Python script with `input` on stdin; returns stdout (throws on a non-zero exit).
func runPython(_ script: String, input: Data) throws -> Data {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", script]
    let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
    process.standardInput = stdin
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    stdin.fileHandleForWriting.write(input)
    try stdin.fileHandleForWriting.close()
    let output = stdout.fileHandleForReading.readDataToEndOfFile()
    let errors = stderr.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw CheckpointError(.invalidState(reason: "python3 failed: " + String(decoding: errors, as: UTF8.self)))
    }
    return output
}

/// botocore's S3SigV4Auth signing each request at a fixed time: prints one Authorization per request.
let botocoreSigner = """
import json, sys, datetime
from unittest import mock
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.config import Config
cases = json.load(sys.stdin)
out = []
for case in cases:
    credentials = Credentials(case["accessKey"], case["secretKey"], case.get("token"))
    auth = S3SigV4Auth(credentials, "s3", case["region"])
    headers = {k: v for k, v in case["headers"] if k.lower() not in ("authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token")}
    body = bytes.fromhex(case["bodyHex"]) if case["bodyHex"] is not None else b""
    request = AWSRequest(method=case["method"], url=case["url"], headers=headers, data=body)
    if case["unsigned"]:
        request.context["client_config"] = Config(s3={"payload_signing_enabled": False})
    when = datetime.datetime.fromtimestamp(case["time"], datetime.timezone.utc)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        auth.add_auth(request)
    out.append(request.headers["Authorization"])
print(json.dumps(out))
"""

@Suite("S3 SigV4 signer")
struct S3SignerTests {
    /// The example of AWS's S3 SigV4 documentation ("GET Object" with a Range header).
    @Test func awsDocumentationVector() {
        let signer = S3Signer(credentials: S3Credentials(accessKeyID: "AKIAIOSFODNN7EXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
                              region: "us-east-1")
        let date = Date(timeIntervalSince1970: 1_369_353_600)  // 2013-05-24T00:00:00Z
        let headers = signer.sign(method: "GET", path: "/test.txt", query: [],
                                  headers: [("host", "examplebucket.s3.amazonaws.com"), ("range", "bytes=0-9")],
                                  payloadHash: S3Signer.emptyPayloadHash, date: date)
        let authorization = headers.first { $0.0 == "authorization" }?.1
        #expect(authorization == "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
            + "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")
    }

    /// The same Authorization header as botocore (the real AWS SDK) for GET, PUT, multipart and list
    /// requests, with query strings, keys with special characters, and session tokens.
    @Test func matchesBotocore() throws {
        let time = 1_733_222_333.0
        let keys = ["run1/trainer_0.12", "dir with space/file+plus", "100%/per%2Fcent", "ünïcødé/ключ/鍵.ckpt", "a=b&c;d,e'f(g)*h!~_-.", "tilde~/x"]
        var cases: [(S3Configuration, S3Request)] = []
        let plain = S3Configuration(endpoint: "http://127.0.0.1:9000", region: "us-east-1",
                                    credentials: S3Credentials(accessKeyID: "AKIDEXAMPLE", secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"))
        var token = plain
        token.credentials.sessionToken = "FwoGZXIvYXdzEJr//////////wEaDFAKE+TOKEN/with=chars"
        token.region = "eu-west-3"
        var virtual = S3Configuration(region: "us-west-2", credentials: plain.credentials)
        virtual.addressingStyle = .virtualHosted
        let body = ByteBuffer(string: "hello, world\n")
        let bodyHash = S3Signer.hexSHA256(Array("hello, world\n".utf8))
        for configuration in [plain, token, virtual] {
            for key in keys {
                cases.append((configuration, S3Request(operation: "GetObject", method: .GET, bucket: "my-bucket", key: key, headers: [("range", "bytes=0-1023")])))
                cases.append((configuration, S3Request(operation: "PutObject", method: .PUT, bucket: "my-bucket", key: key,
                                                       headers: [("if-none-match", "*"), ("content-type", "application/json")], body: body, payloadHash: bodyHash)))
                cases.append((configuration, S3Request(operation: "UploadPart", method: .PUT, bucket: "my-bucket", key: key,
                                                       query: [("partNumber", "17"), ("uploadId", "2~abc/DEF+ghi==")],
                                                       headers: [("x-amz-checksum-crc32c", "yZRlqg==")], body: body, payloadHash: S3Signer.unsignedPayload)))
                cases.append((configuration, S3Request(operation: "CreateMultipartUpload", method: .POST, bucket: "my-bucket", key: key,
                                                       query: [("uploads", "")], headers: [("x-amz-checksum-algorithm", "CRC32C")])))
            }
            cases.append((configuration, S3Request(operation: "ListObjectsV2", method: .GET, bucket: "my-bucket", key: "",
                                                   query: [("list-type", "2"), ("prefix", "dir with space/ü+%/"), ("delimiter", "/"),
                                                           ("continuation-token", "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")])))
            cases.append((configuration, S3Request(operation: "ListMultipartUploads", method: .GET, bucket: "my-bucket", key: "",
                                                   query: [("uploads", ""), ("prefix", "run1/trainer_0.")])))
        }
        var json: [[String: Any]] = []
        var ours: [String] = []
        for (configuration, request) in cases {
            let client = try S3Client(configuration: configuration)
            let (url, headers) = client.prepare(request, date: Date(timeIntervalSince1970: time))
            ours.append(headers.first { $0.0 == "authorization" }!.1)
            var entry: [String: Any] = [
                "accessKey": configuration.credentials.accessKeyID, "secretKey": configuration.credentials.secretAccessKey,
                "region": configuration.region, "method": request.method.rawValue, "url": url, "time": time,
                "headers": headers.map { [$0.0, $0.1] }, "unsigned": request.payloadHash == S3Signer.unsignedPayload,
                "bodyHex": request.body.map { Array($0.readableBytesView).map { String(format: "%02x", $0) }.joined() } as Any,
            ]
            if let token = configuration.credentials.sessionToken { entry["token"] = token }
            json.append(entry)
        }
        let output = try runPython(botocoreSigner, input: try JSONSerialization.data(withJSONObject: json))
        let theirs = try #require(try JSONSerialization.jsonObject(with: output) as? [String])
        #expect(theirs.count == ours.count)
        for (index, (mine, botocore)) in zip(ours, theirs).enumerated() {
            #expect(mine == botocore, "case \(index): \(cases[index].1.operation) \(cases[index].1.key)")
        }
    }

    @Test func encodesLikeRFC3986() {
        #expect(S3Signer.encodePath("a b/c+d/%/ü~") == "a%20b/c%2Bd/%25/%C3%BC~")
        #expect(S3Signer.canonicalQuery([("b", "2"), ("a", "x y"), ("uploads", "")]) == "a=x%20y&b=2&uploads=")
    }
}

@Suite("S3 configuration")
struct S3ConfigurationTests {
    /// Writes `files` into a new temporary home directory, runs `body`, removes it.
    func withHome(_ files: [String: String], _ body: (String) throws -> Void) throws {
        let home = NSTemporaryDirectory() + "ckpt-s3-home-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: home + "/.aws", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: home) }
        for (name, text) in files { try text.write(toFile: home + "/.aws/" + name, atomically: true, encoding: .utf8) }
        try body(home)
    }

    @Test func environmentVariables() throws {
        let configuration = try S3Configuration.fromEnvironment([
            "HOME": "/nonexistent", "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token",
            "AWS_DEFAULT_REGION": "eu-central-1", "AWS_ENDPOINT_URL": "http://127.0.0.1:9000/",
        ])
        #expect(configuration.credentials == S3Credentials(accessKeyID: "id", secretAccessKey: "secret", sessionToken: "token"))
        #expect(configuration.region == "eu-central-1")
        #expect(configuration.endpoint == "http://127.0.0.1:9000")
        #expect(configuration.addressingStyle == .path)
        #expect(configuration.location(bucket: "b").base == "http://127.0.0.1:9000")
        #expect(configuration.location(bucket: "b").pathPrefix == "/b")
        // AWS_REGION wins over AWS_DEFAULT_REGION, AWS_ENDPOINT_URL_S3 over AWS_ENDPOINT_URL.
        let specific = try S3Configuration.fromEnvironment([
            "HOME": "/nonexistent", "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_REGION": "ap-south-1",
            "AWS_DEFAULT_REGION": "eu-central-1", "AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://b:2",
        ])
        #expect(specific.region == "ap-south-1")
        #expect(specific.endpoint == "http://b:2")
        // No endpoint: AWS, virtual-hosted.
        let aws = try S3Configuration.fromEnvironment(["HOME": "/nonexistent", "AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"])
        #expect(aws.addressingStyle == .virtualHosted)
        #expect(aws.location(bucket: "bkt").base == "https://bkt.s3.us-east-1.amazonaws.com")
    }

    @Test func sharedFilesWithProfile() throws {
        let credentials = """
        [default]
        aws_access_key_id = default-id
        aws_secret_access_key = default-secret

        # a comment
        [ci]
        aws_access_key_id=ci-id
        aws_secret_access_key = ci-secret
        aws_session_token = ci-token
        """
        let config = """
        [default]
        region = us-west-1

        [profile ci]
        region = eu-north-1
        s3 =
          addressing_style = virtual
          endpoint_url = http://minio.local:9000
        """
        try withHome(["credentials": credentials, "config": config]) { home in
            let base = try S3Configuration.fromEnvironment(["HOME": home])
            #expect(base.credentials.accessKeyID == "default-id")
            #expect(base.region == "us-west-1")
            let ci = try S3Configuration.fromEnvironment(["HOME": home, "AWS_PROFILE": "ci"])
            #expect(ci.credentials == S3Credentials(accessKeyID: "ci-id", secretAccessKey: "ci-secret", sessionToken: "ci-token"))
            #expect(ci.region == "eu-north-1")
            #expect(ci.endpoint == "http://minio.local:9000")
            #expect(ci.addressingStyle == .virtualHosted)
            #expect(ci.location(bucket: "b").base == "http://b.minio.local:9000")
            // The environment beats the files; explicit overrides beat both.
            let mixed = try S3Configuration.fromEnvironment(["HOME": home, "AWS_PROFILE": "ci", "AWS_ACCESS_KEY_ID": "env-id",
                                                             "AWS_SECRET_ACCESS_KEY": "env-secret", "AWS_REGION": "sa-east-1"],
                                                            overrides: .init(region: "me-south-1", addressingStyle: .path))
            #expect(mixed.credentials.accessKeyID == "env-id")
            #expect(mixed.region == "me-south-1")
            #expect(mixed.addressingStyle == .path)
            let explicit = try S3Configuration.fromEnvironment(["HOME": home], overrides: .init(
                endpoint: "http://127.0.0.1:1", credentials: S3Credentials(accessKeyID: "x", secretAccessKey: "y"), profile: "ci"))
            #expect(explicit.credentials.accessKeyID == "x")
            #expect(explicit.endpoint == "http://127.0.0.1:1")
            #expect(explicit.region == "eu-north-1")
        }
    }

    @Test func clearErrors() throws {
        #expect(throws: CheckpointError.self) { try S3Configuration.fromEnvironment(["HOME": "/nonexistent"]) }
        #expect(throws: CheckpointError.self) {
            try S3Configuration.fromEnvironment(["HOME": "/nonexistent", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_ENDPOINT_URL": "ftp://x"])
        }
        var small = S3Configuration(endpoint: "http://127.0.0.1:1", credentials: S3Credentials(accessKeyID: "a", secretAccessKey: "b"))
        small.partSizeInBytes = 1 << 20
        #expect(throws: CheckpointError.self) { try small.validate() }
    }

    @Test func contentRangeParsing() {
        #expect(S3ObjectSource.parseContentRange("bytes 0-1048575/5000000")! == (0, 1_048_575, 5_000_000))
        #expect(S3ObjectSource.parseContentRange("bytes 3951424-4999999/5000000")! == (3_951_424, 4_999_999, 5_000_000))
        for bad in ["", "bytes */5000000", "bytes 5-4/10", "bytes -1-3/10", "items 0-1/2", "bytes 0-1", "bytes a-b/c", "bytes 0-1/*"] {
            #expect(S3ObjectSource.parseContentRange(bad) == nil, "'\(bad)'")
        }
    }

    @Test func receiveBufferIsFixedOnlyOnLoopbackUnlessSet() {
        let loopback = ["http://127.0.0.1:9000", "http://localhost:1234", "http://LOCALHOST", "http://minio.localhost:9000",
                        "http://127.255.3.4", "http://[::1]:9000", "http://localhost.:9000", "http://[::ffff:127.0.0.1]:9000",
                        "http://0.0.0.0:9000", "http://[::]:9000", "http://[0:0:0:0:0:0:0:1]"]
        for endpoint in loopback {
            #expect(S3Configuration.ReceiveBuffer.automatic.bytes(forEndpoint: endpoint) == 4 << 20, "\(endpoint)")
            #expect(S3Configuration.ReceiveBuffer.kernel.bytes(forEndpoint: endpoint) == nil, "\(endpoint)")
        }
        let remote = ["https://s3.us-east-1.amazonaws.com", "http://128.0.0.1", "http://10.0.0.5:9000", "http://1270.0.0.1",
                      "http://127.0.0.1.example.com", "http://127.0.0", "http://[::2]:9000", "http://notlocalhost:1", "not a url",
                      "http://[::ffff:10.0.0.1]:9000", "http://[::127.0.0.1]", "http://localhost.example.com", "http://0.0.0.1"]
        for endpoint in remote {
            #expect(S3Configuration.ReceiveBuffer.automatic.bytes(forEndpoint: endpoint) == nil, "\(endpoint)")
        }
        #expect(S3Configuration.ReceiveBuffer.automatic.bytes(forEndpoint: nil) == nil, "AWS's own endpoint")
        #expect(S3Configuration.ReceiveBuffer.fixed(1 << 20).bytes(forEndpoint: nil) == 1 << 20)
        #expect(S3Configuration.ReceiveBuffer.fixed(1 << 20).bytes(forEndpoint: "http://10.0.0.5") == 1 << 20)
    }

    @Test func receiveBufferFromTheEnvironment() throws {
        let base = ["HOME": "/nonexistent", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"]
        #expect(try S3Configuration.fromEnvironment(base).receiveBuffer == .automatic)
        let forms: [(String, S3Configuration.ReceiveBuffer)] = [
            ("auto", .automatic), ("kernel", .kernel), ("KERNEL", .kernel), ("65536", .fixed(65536)), ("4M", .fixed(4 << 20)),
            ("512k", .fixed(512 << 10)), (" 1G ", .fixed(1 << 30)), ("4M\n", .fixed(4 << 20)),
        ]
        for (text, expected) in forms {
            let configuration = try S3Configuration.fromEnvironment(base.merging(["CKPT_S3_RECEIVE_BUFFER": text]) { $1 })
            #expect(configuration.receiveBuffer == expected, "'\(text)'")
        }
        // Malformed, and well-formed but outside 64 KiB...1 GiB: both named by the variable.
        for text in ["4X", "-1", "+4M", "M", "1.5M", "99999999999999999999G", "9223372036854775807K", "４M", "4\u{212A}", "automatic",
                     "0", "65535", "2G"] {
            do {
                _ = try S3Configuration.fromEnvironment(base.merging(["CKPT_S3_RECEIVE_BUFFER": text]) { $1 })
                Issue.record("'\(text)' was accepted")
            } catch {
                #expect("\(error)".contains("CKPT_S3_RECEIVE_BUFFER"), "'\(text)': \(error)")
            }
        }
        var configuration = try S3Configuration.fromEnvironment(base)
        for bytes in [0, 65535, (1 << 30) + 1] {
            configuration.receiveBuffer = .fixed(bytes)
            #expect(throws: CheckpointError.self, "\(bytes) bytes") { try configuration.validate() }
        }
        configuration.receiveBuffer = .fixed(1 << 16)
        try configuration.validate()
    }
}
