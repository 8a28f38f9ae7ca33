import BlobCodec

/// A JSON value with object members in document order, for the few JSON
/// documents this package reads and writes (safetensors headers, the
/// checkpoint metadata file, the CLI's `--json` output).
///
/// The parser is strict (RFC 8259): no trailing commas, no comments, no
/// duplicate member names, valid UTF-8 and escapes only, arrays and objects
/// nested at most ``maximumDepth`` deep. Numbers keep their literal text, so 64-bit integers
/// round-trip exactly.
package enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    /// The number's literal text, validated against the JSON grammar.
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in document order; names are unique.
    case object([(String, JSONValue)])

    /// How many arrays and objects may be open at once: 127, serde_json's
    /// recursion limit (128 levels, the 128th refused), which the safetensors
    /// reference reads its header with, so that unknown fields it tolerates
    /// are tolerated here too. Scalars do not count.
    package static let maximumDepth = 127

    package static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.number(a), .number(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)): return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    // MARK: Accessors

    package subscript(key: String) -> JSONValue? {
        guard case let .object(members) = self else { return nil }
        return members.first { $0.0 == key }?.1
    }

    package var stringValue: String? { if case let .string(s) = self { return s } else { return nil } }
    package var arrayValue: [JSONValue]? { if case let .array(a) = self { return a } else { return nil } }
    package var objectValue: [(String, JSONValue)]? { if case let .object(o) = self { return o } else { return nil } }

    /// The value as a non-negative integer that fits in `Int`, or nil (fractions, exponents, signs, overflow).
    package var nonNegativeIntValue: Int? {
        guard case let .number(text) = self, !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        return Int(text)
    }

    /// The value as an integer that fits in `Int`, or nil.
    package var intValue: Int? {
        guard case let .number(text) = self else { return nil }
        return Int(text)
    }

    package var doubleValue: Double? {
        guard case let .number(text) = self else { return nil }
        return Double(text)
    }

    package static func integer<I: BinaryInteger>(_ value: I) -> JSONValue { .number(String(value)) }

    /// A finite double as a number; NaN and infinities (which JSON lacks) as null.
    package static func double(_ value: Double) -> JSONValue { value.isFinite ? .number(String(value)) : .null }

    // MARK: Serializing

    /// Compact JSON (no spaces), strings escaped as serde_json does: `"` and
    /// `\` and control characters only; everything else is written as UTF-8.
    package func serialized() -> [UInt8] {
        var out: [UInt8] = []
        write(to: &out)
        return out
    }

    package func write(to out: inout [UInt8]) {
        switch self {
        case .null: out += Array("null".utf8)
        case let .bool(b): out += Array((b ? "true" : "false").utf8)
        case let .number(text): out += Array(text.utf8)
        case let .string(s): JSONValue.writeString(s, to: &out)
        case let .array(items):
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                item.write(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case let .object(members):
            out.append(UInt8(ascii: "{"))
            for (i, (key, value)) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                JSONValue.writeString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                value.write(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
    }

    static func writeString(_ s: String, to out: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        out.append(UInt8(ascii: "\""))
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case 0x08: out += [UInt8(ascii: "\\"), UInt8(ascii: "b")]
            case 0x0C: out += [UInt8(ascii: "\\"), UInt8(ascii: "f")]
            case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20: out += [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// Serialized as a String (for printing).
    package var text: String { String(decoding: serialized(), as: UTF8.self) }

    // MARK: Parsing

    /// Parses one JSON document; whitespace may surround it, nothing else.
    ///
    /// - Throws: `CheckpointError.Code.invalidField` naming
    ///   `what` and the byte offset of the first error.
    package static func parse(_ bytes: UnsafeRawBufferPointer, what: String) throws(CheckpointError) -> JSONValue {
        var parser = Parser(bytes: bytes, what: what)
        parser.skipWhitespace()
        let value = try parser.parseValue(depth: 0)
        parser.skipWhitespace()
        guard parser.position == bytes.count else { throw parser.error("unexpected data after the JSON value") }
        return value
    }

    package static func parse(_ bytes: [UInt8], what: String) throws(CheckpointError) -> JSONValue {
        try typedThrows { try bytes.withUnsafeBytes { try parse($0, what: what) } }
    }

    private struct Parser {
        let bytes: UnsafeRawBufferPointer
        let what: String
        var position = 0

        init(bytes: UnsafeRawBufferPointer, what: String) {
            self.bytes = bytes
            self.what = what
        }

        func error(_ reason: String) -> CheckpointError {
            CheckpointError(.invalidField(field: what, reason: "\(reason) at byte \(position)"))
        }

        var peek: UInt8? { position < bytes.count ? bytes[position] : nil }

        mutating func skipWhitespace() {
            while let byte = peek, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { position += 1 }
        }

        mutating func expect(_ literal: String) throws(CheckpointError) {
            for byte in literal.utf8 {
                guard peek == byte else { throw error("invalid literal") }
                position += 1
            }
        }

        /// Parses a value inside `depth` open arrays and objects.
        mutating func parseValue(depth: Int) throws(CheckpointError) -> JSONValue {
            guard let byte = peek else { throw error("unexpected end of input") }
            if byte == UInt8(ascii: "{") || byte == UInt8(ascii: "[") {
                guard depth < JSONValue.maximumDepth else { throw error("arrays and objects nested deeper than \(JSONValue.maximumDepth)") }
            }
            switch byte {
            case UInt8(ascii: "{"): return try parseObject(depth: depth)
            case UInt8(ascii: "["): return try parseArray(depth: depth)
            case UInt8(ascii: "\""): return .string(try parseString())
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "n"): try expect("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseNumber()
            default: throw error("unexpected character 0x\(String(byte, radix: 16))")
            }
        }

        mutating func parseObject(depth: Int) throws(CheckpointError) -> JSONValue {
            position += 1
            var members: [(String, JSONValue)] = []
            var seen = Set<[UInt8]>()
            skipWhitespace()
            if peek == UInt8(ascii: "}") { position += 1; return .object(members) }
            while true {
                skipWhitespace()
                guard peek == UInt8(ascii: "\"") else { throw error("expected a member name") }
                let start = position
                let key = try parseString()
                guard seen.insert(Array(key.utf8)).inserted else {
                    position = start
                    throw error("duplicate member name \"\(key.prefix(80))\"")
                }
                skipWhitespace()
                guard peek == UInt8(ascii: ":") else { throw error("expected ':'") }
                position += 1
                skipWhitespace()
                members.append((key, try parseValue(depth: depth + 1)))
                skipWhitespace()
                if peek == UInt8(ascii: ",") { position += 1; continue }
                if peek == UInt8(ascii: "}") { position += 1; return .object(members) }
                throw error("expected ',' or '}'")
            }
        }

        mutating func parseArray(depth: Int) throws(CheckpointError) -> JSONValue {
            position += 1
            var items: [JSONValue] = []
            skipWhitespace()
            if peek == UInt8(ascii: "]") { position += 1; return .array(items) }
            while true {
                skipWhitespace()
                items.append(try parseValue(depth: depth + 1))
                skipWhitespace()
                if peek == UInt8(ascii: ",") { position += 1; continue }
                if peek == UInt8(ascii: "]") { position += 1; return .array(items) }
                throw error("expected ',' or ']'")
            }
        }

        mutating func parseNumber() throws(CheckpointError) -> JSONValue {
            let start = position
            func digits() -> Int {
                let from = position
                while let b = peek, b >= 0x30 && b <= 0x39 { position += 1 }
                return position - from
            }
            if peek == UInt8(ascii: "-") { position += 1 }
            if peek == UInt8(ascii: "0") {
                position += 1
            } else {
                guard digits() > 0 else { throw error("invalid number") }
            }
            if peek == UInt8(ascii: ".") {
                position += 1
                guard digits() > 0 else { throw error("invalid number") }
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                position += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { position += 1 }
                guard digits() > 0 else { throw error("invalid number") }
            }
            return .number(String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<position]), as: UTF8.self))
        }

        mutating func parseHex4() throws(CheckpointError) -> UInt32 {
            guard position + 4 <= bytes.count else { throw error("truncated \\u escape") }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[position]
                let digit: UInt8
                switch b {
                case 0x30...0x39: digit = b - 0x30
                case 0x41...0x46: digit = b - 0x41 + 10
                case 0x61...0x66: digit = b - 0x61 + 10
                default: throw error("invalid \\u escape")
                }
                value = value << 4 | UInt32(digit)
                position += 1
            }
            return value
        }

        mutating func parseString() throws(CheckpointError) -> String {
            position += 1  // opening quote
            var out: [UInt8] = []
            var runStart = position
            while true {
                guard let byte = peek else { throw error("unterminated string") }
                if byte == UInt8(ascii: "\"") {
                    out += UnsafeRawBufferPointer(rebasing: bytes[runStart..<position])
                    position += 1
                    break
                }
                if byte < 0x20 { throw error("control character in string") }
                if byte != UInt8(ascii: "\\") { position += 1; continue }
                out += UnsafeRawBufferPointer(rebasing: bytes[runStart..<position])
                position += 1
                guard let escape = peek else { throw error("unterminated escape") }
                position += 1
                switch escape {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try parseHex4()
                    if scalar >= 0xD800 && scalar < 0xDC00 {
                        guard position + 2 <= bytes.count, bytes[position] == UInt8(ascii: "\\"), bytes[position + 1] == UInt8(ascii: "u") else {
                            throw error("unpaired surrogate in \\u escape")
                        }
                        position += 2
                        let low = try parseHex4()
                        guard low >= 0xDC00 && low < 0xE000 else { throw error("unpaired surrogate in \\u escape") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if scalar >= 0xDC00 && scalar < 0xE000 {
                        throw error("unpaired surrogate in \\u escape")
                    }
                    out += Array(String(Character(Unicode.Scalar(scalar)!)).utf8)
                default: throw error("invalid escape")
                }
                runStart = position
            }
            guard let string = String(validating: out, as: UTF8.self) else { throw error("string is not valid UTF-8") }
            return string
        }
    }
}
