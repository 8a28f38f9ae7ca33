/// The few pieces of S3's XML responses this backend reads: the text of
/// elements by tag name, in document order, with the five predefined entities
/// and numeric character references decoded. S3's responses have no
/// attributes on the elements read, no CDATA and no namespaces prefixes.
enum S3XML {
    /// The decoded text of every `<tag>…</tag>` in `xml`, in order.
    static func values(_ tag: String, in xml: Substring) -> [String] {
        blocks(tag, in: xml).map { decode($0) }
    }

    /// The first value of `tag`, or nil.
    static func value(_ tag: String, in xml: Substring) -> String? {
        blocks(tag, in: xml).first.map { decode($0) }
    }

    /// The raw content of every `<tag>…</tag>` (or `<tag/>`, empty) in `xml`,
    /// found by a scan of its UTF-8 bytes (S3 does not nest an element in one of its own name).
    static func blocks(_ tag: String, in xml: Substring) -> [Substring] {
        let bytes = Array(xml.utf8)
        let open = Array("<\(tag)>".utf8), close = Array("</\(tag)>".utf8), empty = Array("<\(tag)/>".utf8)
        func matches(_ pattern: [UInt8], at index: Int) -> Bool {
            index + pattern.count <= bytes.count && bytes[index..<(index + pattern.count)].elementsEqual(pattern)
        }
        var result: [Substring] = []
        var index = 0
        while let next = bytes[index...].firstIndex(of: UInt8(ascii: "<")) {
            if matches(empty, at: next) {
                result.append("")
                index = next + empty.count
            } else if matches(open, at: next) {
                let start = next + open.count
                var end = start
                while end < bytes.count, !(bytes[end] == UInt8(ascii: "<") && matches(close, at: end)) { end += 1 }
                guard end < bytes.count else { break }
                result.append(Substring(String(decoding: bytes[start..<end], as: UTF8.self)))
                index = end + close.count
            } else {
                index = next + 1
            }
        }
        return result
    }

    /// Text with `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&#N;` and `&#xH;` decoded.
    static func decode(_ text: Substring) -> String {
        guard text.contains("&") else { return String(text) }
        var out = ""
        var index = text.startIndex
        while index < text.endIndex {
            let character = text[index]
            if character == "&", let semicolon = text[index...].firstIndex(of: ";"), text.distance(from: index, to: semicolon) <= 10 {
                let entity = text[text.index(after: index)..<semicolon]
                var decoded: String?
                switch entity {
                case "amp": decoded = "&"
                case "lt": decoded = "<"
                case "gt": decoded = ">"
                case "quot": decoded = "\""
                case "apos": decoded = "'"
                default:
                    if entity.hasPrefix("#x") || entity.hasPrefix("#X") {
                        decoded = UInt32(entity.dropFirst(2), radix: 16).flatMap(Unicode.Scalar.init).map { String(Character($0)) }
                    } else if entity.hasPrefix("#") {
                        decoded = UInt32(entity.dropFirst()).flatMap(Unicode.Scalar.init).map { String(Character($0)) }
                    }
                }
                if let decoded {
                    out += decoded
                    index = text.index(after: semicolon)
                    continue
                }
            }
            out.append(character)
            index = text.index(after: index)
        }
        return out
    }

    /// `text` with `&`, `<`, `>`, `"` and `'` escaped, for request bodies.
    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            default: out.append(character)
            }
        }
        return out
    }
}
