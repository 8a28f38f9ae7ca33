import ArgumentParser
import CheckpointIO
import Foundation

@main
struct Ckpt: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ckpt",
        abstract: "The checkpoint engine's command line.",
        discussion: """
            Reads our container format, safetensors, .npy and .npz (detected from the bytes, not the name).

            Exit status:
              0   success
              64  usage error (bad option, unknown codec, bad size)
              65  data error: corrupt or torn file, not a tensor file, failed verification
              74  I/O error: missing file, permission denied, disk full, locked by another writer
              130 interrupted (SIGINT), 143 terminated (SIGTERM): the unfinished output was removed
            """,
        version: "ckpt 0.1.0 (container format version 1)",
        subcommands: [Inspect.self, Verify.self, Diff.self, Convert.self, Extract.self, Recover.self, Bench.self, Demo.self, Codecs.self, DemoChild.self, S3Bench.self])

    static func main() {
        installInterruptHandling()
        main(nil)
    }
}
