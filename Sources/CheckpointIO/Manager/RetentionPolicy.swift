/// Which complete checkpoints to keep, by three separate rules.
///
/// An epoch is kept when **any** set rule keeps it:
/// - ``keepLatest``: the newest N epochs;
/// - ``keepEvery``: every epoch divisible by K (0, K, 2K…), forever;
/// - ``keepBest``: the M epochs with the best metric (lowest for
///   ``MetricOrder/min``, highest for ``MetricOrder/max``; ties go to the
///   newer epoch; epochs without a metric, or with NaN, never count as best).
///
/// With no rule set (``keepAll``) nothing is deleted. Whatever the rules,
/// the newest complete epoch and the epoch a run resumed from are never
/// deleted (``DurableMetadataHandler`` passes them as `protected`).
public struct RetentionPolicy: Sendable, Equatable {
    /// Whether a lower or a higher metric is better.
    public enum MetricOrder: String, Sendable {
        /// Lower is better (a loss).
        case min
        /// Higher is better (an accuracy).
        case max
    }

    /// Keep the newest N epochs (N ≥ 1), or nil for no such rule.
    public var keepLatest: Int?
    /// Keep every epoch divisible by K (K ≥ 1), or nil.
    public var keepEvery: Int?
    /// Keep the `count` (≥ 1) best epochs by metric, or nil.
    public var keepBest: (count: Int, order: MetricOrder)? {
        get { keepBestCount.map { ($0, keepBestOrder) } }
        set {
            keepBestCount = newValue?.count
            keepBestOrder = newValue?.order ?? .min
        }
    }
    private var keepBestCount: Int?
    private var keepBestOrder: MetricOrder = .min

    /// Keeps everything.
    public static let keepAll = RetentionPolicy()

    /// A policy with the given rules; nil leaves a rule unset.
    ///
    /// - Precondition: every count given is at least 1.
    public init(keepLatest: Int? = nil, keepEvery: Int? = nil, keepBest: (count: Int, order: MetricOrder)? = nil) {
        precondition((keepLatest ?? 1) >= 1, "keepLatest must be at least 1")
        precondition((keepEvery ?? 1) >= 1, "keepEvery must be at least 1")
        precondition((keepBest?.count ?? 1) >= 1, "keepBest count must be at least 1")
        self.keepLatest = keepLatest
        self.keepEvery = keepEvery
        self.keepBest = keepBest
    }

    /// True when no rule is set.
    public var keepsEverything: Bool { keepLatest == nil && keepEvery == nil && keepBestCount == nil }

    /// The epochs to keep among `epochs` (each with its metric, if any),
    /// always including `protected` ones that are present. Pure.
    public func epochsToKeep(_ epochs: [(epoch: Int, metric: Double?)], protected: Set<Int>) -> Set<Int> {
        let all = Set(epochs.map(\.epoch))
        if keepsEverything { return all }
        var keep = protected.intersection(all)
        if let keepLatest {
            keep.formUnion(all.sorted(by: >).prefix(keepLatest))
        }
        if let keepEvery {
            keep.formUnion(all.filter { $0 % keepEvery == 0 })
        }
        if let count = keepBestCount {
            let scored = epochs.compactMap { item -> (epoch: Int, metric: Double)? in
                guard let metric = item.metric, !metric.isNaN else { return nil }
                return (item.epoch, metric)
            }
            let ranked = scored.sorted { a, b in
                if a.metric != b.metric { return keepBestOrder == .min ? a.metric < b.metric : a.metric > b.metric }
                return a.epoch > b.epoch
            }
            keep.formUnion(ranked.prefix(count).map(\.epoch))
        }
        return keep
    }

    /// Equal rules (the order of ``keepBest`` counts only when that rule is set).
    public static func == (lhs: RetentionPolicy, rhs: RetentionPolicy) -> Bool {
        lhs.keepLatest == rhs.keepLatest && lhs.keepEvery == rhs.keepEvery
            && lhs.keepBestCount == rhs.keepBestCount && (lhs.keepBestCount == nil || lhs.keepBestOrder == rhs.keepBestOrder)
    }
}
