import BlobCodec
import Foundation

/// AWS credentials: an access key pair and, for temporary credentials, a session token.
public struct S3Credentials: Sendable, Equatable {
    public var accessKeyID: String
    public var secretAccessKey: String
    /// `AWS_SESSION_TOKEN`: sent as `x-amz-security-token` when set.
    public var sessionToken: String?

    public init(accessKeyID: String, secretAccessKey: String, sessionToken: String? = nil) {
        self.accessKeyID = accessKeyID
        self.secretAccessKey = secretAccessKey
        self.sessionToken = sessionToken
    }
}

/// How a bucket appears in request URLs.
public enum S3AddressingStyle: String, Sendable {
    /// `http://endpoint/bucket/key`: local servers (moto, MinIO) and any bucket name.
    case path
    /// `https://bucket.endpoint/key`: AWS's default for DNS-compatible bucket names.
    case virtualHosted = "virtual"
}

/// Where an S3-compatible store is and how to talk to it: endpoint, region,
/// credentials, addressing, and the transfer and retry settings.
///
/// ``fromEnvironment(_:overrides:)`` resolves it the way the AWS SDKs do:
/// explicit values first, then the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION` /
/// `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`), then the
/// profile (`AWS_PROFILE`, else `default`) of `~/.aws/credentials` and
/// `~/.aws/config` (or `AWS_SHARED_CREDENTIALS_FILE` / `AWS_CONFIG_FILE`).
/// One setting of this engine's own also comes from the environment:
/// `CKPT_S3_RECEIVE_BUFFER` (``ReceiveBuffer``).
public struct S3Configuration: Sendable {
    /// `http://host:port` or `https://host`; nil means AWS's regional endpoint.
    public var endpoint: String?
    public var region: String
    public var credentials: S3Credentials
    public var addressingStyle: S3AddressingStyle
    /// The size of each part of a multipart upload except the last (default 16 MiB,
    /// at least 5 MiB). After every 1,000 parts the size doubles, so that a file of
    /// any size fits in S3's 10,000 parts.
    public var partSizeInBytes: Int = 16 << 20
    /// Parts uploaded at once (default 8); a save holds at most one more part than this in memory.
    public var uploadConcurrency: Int = 8
    /// The size of each ranged `GET` of a large read (default 16 MiB, the default
    /// part size, so that ranges fall on the parts a save uploaded, as AWS advises).
    public var rangeSizeInBytes: Int = 16 << 20
    /// Ranged `GET`s at once (default 8).
    public var downloadConcurrency: Int = 8
    /// How failed requests are retried.
    public var retry: S3RetryPolicy = S3RetryPolicy()
    /// How long a writer lease lasts unless renewed (renewed every third of it), in seconds.
    public var leaseDurationInSeconds: Double = 30
    /// Seconds a request may take before it is abandoned (and retried when idempotent).
    public var requestTimeoutInSeconds: Double = 120
    /// The socket receive buffer of each connection (default ``ReceiveBuffer/automatic``).
    public var receiveBuffer: ReceiveBuffer = .automatic

    /// S3's smallest part (except the last).
    public static let minimumPartSize = 5 << 20
    /// S3's most parts in one upload.
    public static let maximumPartCount = 10_000

    public init(endpoint: String? = nil, region: String = "us-east-1", credentials: S3Credentials,
                addressingStyle: S3AddressingStyle? = nil) {
        self.endpoint = endpoint
        self.region = region
        self.credentials = credentials
        self.addressingStyle = addressingStyle ?? (endpoint == nil ? .virtualHosted : .path)
    }

    /// Explicit values that take precedence over the environment and the profile files.
    public struct Overrides: Sendable {
        public var endpoint: String?
        public var region: String?
        public var credentials: S3Credentials?
        public var profile: String?
        public var addressingStyle: S3AddressingStyle?
        public init(endpoint: String? = nil, region: String? = nil, credentials: S3Credentials? = nil,
                    profile: String? = nil, addressingStyle: S3AddressingStyle? = nil) {
            self.endpoint = endpoint
            self.region = region
            self.credentials = credentials
            self.profile = profile
            self.addressingStyle = addressingStyle
        }
    }

    /// Resolves a configuration from `overrides`, then `environment`, then the
    /// shared AWS files of the profile (see ``S3Configuration``).
    ///
    /// In the config file, a profile other than `default` is the section
    /// `[profile NAME]`; `region`, `endpoint_url` and an `s3` sub-section's
    /// `addressing_style` (`path` / `virtual`) are read. In the credentials
    /// file the section is `[NAME]`.
    ///
    /// `CKPT_S3_RECEIVE_BUFFER` (`auto`, `kernel` or a size such as `4M`) sets
    /// ``receiveBuffer``.
    ///
    /// - Throws: ``CheckpointError/Code/invalidField(field:reason:)`` when no
    ///   credentials are found, the endpoint is not an http(s) URL, or
    ///   `CKPT_S3_RECEIVE_BUFFER` is not one of its forms.
    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment,
                                       overrides: Overrides = Overrides()) throws(CheckpointError) -> S3Configuration {
        func env(_ name: String) -> String? {
            guard let value = environment[name], !value.isEmpty else { return nil }
            return value
        }
        let profile = overrides.profile ?? env("AWS_PROFILE") ?? "default"
        let home = env("HOME") ?? NSHomeDirectory()
        let credentialsFile = env("AWS_SHARED_CREDENTIALS_FILE") ?? home + "/.aws/credentials"
        let configFile = env("AWS_CONFIG_FILE") ?? home + "/.aws/config"
        let credentialsSection = AWSProfileFile.load(credentialsFile)[profile] ?? [:]
        let configSection = AWSProfileFile.load(configFile)[profile == "default" ? "default" : "profile " + profile] ?? [:]
        func fromFiles(_ key: String) -> String? { credentialsSection[key] ?? configSection[key] }

        let credentials: S3Credentials
        if let explicit = overrides.credentials {
            credentials = explicit
        } else if let id = env("AWS_ACCESS_KEY_ID"), let secret = env("AWS_SECRET_ACCESS_KEY") {
            credentials = S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: env("AWS_SESSION_TOKEN"))
        } else if let id = fromFiles("aws_access_key_id"), let secret = fromFiles("aws_secret_access_key") {
            credentials = S3Credentials(accessKeyID: id, secretAccessKey: secret, sessionToken: fromFiles("aws_session_token"))
        } else {
            throw CheckpointError(.invalidField(field: "S3 credentials", reason:
                "none found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile '\(profile)' in \(credentialsFile)"))
        }
        let region = overrides.region ?? env("AWS_REGION") ?? env("AWS_DEFAULT_REGION") ?? configSection["region"] ?? "us-east-1"
        let endpoint = overrides.endpoint ?? env("AWS_ENDPOINT_URL_S3") ?? env("AWS_ENDPOINT_URL")
            ?? configSection["s3.endpoint_url"] ?? configSection["endpoint_url"]
        var style = overrides.addressingStyle
        if style == nil, let name = configSection["s3.addressing_style"] {
            style = name == "path" ? .path : name == "virtual" ? .virtualHosted : nil
        }
        var configuration = S3Configuration(endpoint: endpoint, region: region, credentials: credentials, addressingStyle: style)
        if let text = env("CKPT_S3_RECEIVE_BUFFER") {
            guard let receiveBuffer = ReceiveBuffer(parsing: text) else {
                throw CheckpointError(.invalidField(field: "CKPT_S3_RECEIVE_BUFFER", reason: "'\(text)' is not auto, kernel or a size in bytes (e.g. 4M)"))
            }
            if case .fixed(let bytes) = receiveBuffer, !ReceiveBuffer.fixedRange.contains(bytes) {
                throw CheckpointError(.invalidField(field: "CKPT_S3_RECEIVE_BUFFER", reason: "'\(text)' is outside 64 KiB...1 GiB"))
            }
            configuration.receiveBuffer = receiveBuffer
        }
        if let endpoint = configuration.endpoint {
            guard let url = URLComponents(string: endpoint), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host?.isEmpty == false else {
                throw CheckpointError(.invalidField(field: "S3 endpoint", reason: "'\(endpoint)' is not an http:// or https:// URL"))
            }
            configuration.endpoint = endpoint.hasSuffix("/") ? String(endpoint.dropLast()) : endpoint
        }
        return configuration
    }

    /// Checks the transfer settings against S3's limits.
    ///
    /// - Throws: ``CheckpointError/Code/invalidField(field:reason:)`` naming the setting.
    public func validate() throws(CheckpointError) {
        guard partSizeInBytes >= S3Configuration.minimumPartSize, partSizeInBytes <= 5 << 30 else {
            throw CheckpointError(.invalidField(field: "partSizeInBytes", reason: "\(partSizeInBytes) is outside S3's 5 MiB...5 GiB"))
        }
        guard uploadConcurrency >= 1, downloadConcurrency >= 1, rangeSizeInBytes >= 1 << 16 else {
            throw CheckpointError(.invalidField(field: "concurrency", reason: "uploadConcurrency and downloadConcurrency must be ≥ 1, rangeSizeInBytes ≥ 64 KiB"))
        }
        if case .fixed(let bytes) = receiveBuffer, !ReceiveBuffer.fixedRange.contains(bytes) {
            throw CheckpointError(.invalidField(field: "receiveBuffer", reason: "\(bytes) bytes is outside 64 KiB...1 GiB"))
        }
    }

    /// The scheme, host and port requests go to for `bucket`, and the path prefix before the key.
    func location(bucket: String) -> (base: String, host: String, pathPrefix: String) {
        let endpoint = self.endpoint ?? "https://s3.\(region).amazonaws.com"
        let components = URLComponents(string: endpoint)!
        let scheme = components.scheme!
        var host = components.host!
        if let port = components.port { host += ":\(port)" }
        switch addressingStyle {
        case .path:
            return ("\(scheme)://\(host)", host, "/" + S3Signer.encodePathSegment(bucket))
        case .virtualHosted:
            let virtualHost = "\(bucket).\(host)"
            return ("\(scheme)://\(virtualHost)", virtualHost, "")
        }
    }
}

/// The shared AWS configuration files' INI syntax: `[section]`, `key = value`,
/// `#`/`;` comments, and indented `key = value` lines under a `name =` line
/// (a sub-section, read as `name.key`).
enum AWSProfileFile {
    static func load(_ path: String) -> [String: [String: String]] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [:] }
        return parse(text)
    }

    static func parse(_ text: String) -> [String: [String: String]] {
        var sections: [String: [String: String]] = [:]
        var current: String?
        var parent: String?
        for rawLine in text.split(whereSeparator: \.isNewline) {
            let indented = rawLine.first == " " || rawLine.first == "\t"
            let line = rawLine.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix(";") { continue }
            if line.hasPrefix("[") && line.hasSuffix("]") {
                current = line.dropFirst().dropLast().trimmingCharacters(in: .whitespaces)
                parent = nil
                if let current, sections[current] == nil { sections[current] = [:] }
                continue
            }
            guard let section = current, let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            let value = line[line.index(after: equals)...].trimmingCharacters(in: .whitespaces)
            if indented, let parent {
                sections[section]![parent + "." + key] = value
            } else if value.isEmpty {
                parent = key
            } else {
                parent = nil
                sections[section]![key] = value
            }
        }
        return sections
    }
}
