//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets' own entry
//! points, so that a reader that regresses on any input found while fuzzing fails here, on the
//! stable toolchain, without a fuzzer.

use std::path::Path;

use intr_explorer::fuzzing::TARGETS;

#[test]
fn every_input_of_the_fuzz_corpus_is_read_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut total = 0;
    for (name, run) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: the corpus of `{name}` is empty", dir.display());
        for f in &files {
            let data = std::fs::read(f).unwrap();
            // A panic names the input that caused it.
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "fuzz target `{name}` panicked on {}", f.display());
        }
        total += files.len();
    }
    assert!(total >= TARGETS.len());
}
