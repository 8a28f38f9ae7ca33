/// The dimensions of a tensor, outermost first (C order).
///
/// Any rank from 0 (a scalar, one element) to ``maximumRank`` is allowed, and
/// dimensions may be zero (an empty tensor). Element and byte counts are
/// overflow-checked: a shape whose element count does not fit in a signed
/// 64-bit integer is rejected rather than wrapped.
public struct Shape: Sendable, Hashable, CustomStringConvertible, ExpressibleByArrayLiteral {
    /// The largest rank accepted (numpy's limit).
    public static let maximumRank = 64

    /// The dimensions, outermost first.
    public let dimensions: [Int]

    /// The number of elements (1 for a scalar), computed with overflow checks at init.
    public let elementCount: Int

    /// Creates a shape, validating every dimension.
    ///
    /// - Throws: ``CheckpointError/Code/invalidShape(reason:)`` for a negative
    ///   dimension, a rank above ``maximumRank``, or an element count that overflows.
    public init(_ dimensions: [Int]) throws(CheckpointError) {
        guard dimensions.count <= Shape.maximumRank else {
            throw CheckpointError(.invalidShape(reason: "rank \(dimensions.count) exceeds \(Shape.maximumRank)"))
        }
        var count = 1
        var overflowed = false
        for dimension in dimensions {
            guard dimension >= 0 else {
                throw CheckpointError(.invalidShape(reason: "negative dimension \(dimension) in \(dimensions)"))
            }
            if !overflowed {
                let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
                if overflow { overflowed = true } else { count = product }
            }
        }
        // A zero dimension makes the element count 0 even if other dimensions overflow together.
        if dimensions.contains(0) {
            count = 0
        } else if overflowed {
            throw CheckpointError(.invalidShape(reason: "element count of \(dimensions) overflows 64 bits"))
        }
        self.dimensions = dimensions
        self.elementCount = count
    }

    /// A shape from a literal; traps on an invalid literal (a programmer error).
    public init(arrayLiteral elements: Int...) {
        do { try self.init(elements) } catch { preconditionFailure("invalid shape literal: \(error)") }
    }

    /// The rank (number of dimensions).
    public var rank: Int { dimensions.count }

    /// The exact byte count of a tensor of this shape and `dtype`; `nil` for ``DType/string``.
    public func byteCount(for dtype: DType) throws(CheckpointError) -> Int? {
        try dtype.byteCount(elementCount: elementCount)
    }

    /// The dimensions in brackets, e.g. `[4096, 4096]`.
    public var description: String { "[" + dimensions.map(String.init).joined(separator: ", ") + "]" }
}
