//! `explain` and `remake`, end to end: folders expand, a bad photo is reported and skipped, shards
//! together give exactly one run's outputs, reruns skip finished photos, every figure carries its
//! provenance and `remake` rebuilds it byte for byte, and unwritable outputs name the path.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_intr-explorer")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn model() -> String {
    parity_dir().join("tiny_postnorm_sine.pth").display().to_string()
}

/// A folder of photos (three real ones, the bunting) and one file that is not an image.
fn inputs(dir: &Path) -> PathBuf {
    let d = dir.join("photos");
    std::fs::create_dir_all(d.join("more")).unwrap();
    std::fs::copy(parity_dir().join("Painted_Bunting_0004_16641.jpg"), d.join("bunting.jpg")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/demo/photos");
    for f in ["owl.webp", "duck.webp"] {
        std::fs::copy(root.join(f), d.join(f)).unwrap();
    }
    std::fs::copy(root.join("scarlet_macaw.webp"), d.join("more/macaw.webp")).unwrap();
    std::fs::write(d.join("broken.jpg"), b"this is not a JPEG").unwrap();
    d
}

/// Every file under `dir` (relative path → bytes), records included.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Asserts two trees hold the same files with the same bytes, naming the ones that differ.
fn same_tree(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>, what: &str) {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let differing: Vec<&&String> = keys.iter().filter(|k| a.get(**k) != b.get(**k)).collect();
    assert!(differing.is_empty(), "{what}: these files differ or are missing: {differing:?}");
}

fn explain(photos: &Path, out: &Path, extra: &[&str]) -> Output {
    let m = model();
    let (p, o) = (photos.display().to_string(), out.display().to_string());
    let mut args = vec!["explain", "--model", &m, "--class", "top1", "--compare", "class 1,class 2", "--out", &o];
    args.extend_from_slice(extra);
    args.push(&p);
    run(&args)
}

#[test]
fn shards_together_give_one_runs_outputs_and_reruns_skip_finished_photos() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = inputs(tmp.path());
    let (one, sharded) = (tmp.path().join("one"), tmp.path().join("sharded"));

    let o = explain(&photos, &one, &[]);
    assert_eq!(o.status.code(), Some(1), "one photo failed: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("broken.jpg") && err.contains("not an image"), "{err}");
    let full = tree(&one);
    // 4 good photos × (gallery + comparison), two summaries, 5 records.
    assert_eq!(full.keys().filter(|k| k.ends_with(".svg")).count(), 8, "{:?}", full.keys());
    let summary = String::from_utf8(full["summary.csv"].clone()).unwrap();
    assert!(summary.lines().any(|l| l.contains("broken.jpg") && l.contains("not an image")), "{summary}");
    // A failed photo's row has every column, its message in `error` (it used to be one column off).
    let rows = summary_rows(&one);
    let broken = rows.iter().find(|r| r["image"].ends_with("broken.jpg")).unwrap();
    assert!(broken["error"].contains("not an image") && broken["class"].is_empty(), "{broken:?}");
    assert_eq!(summary.lines().filter(|l| l.contains("macaw.webp")).count(), 5, "4 heads + mean of the top class");
    // Cells, heads and layers counted from 1; the peak in photo pixels; the figure it is in.
    let macaw: Vec<_> = rows.iter().filter(|r| r["image"].ends_with("macaw.webp")).collect();
    for r in &macaw {
        assert_eq!(r["layer"], "2", "{r:?}");
        let (row, col): (usize, usize) = (r["peak_row"].parse().unwrap(), r["peak_col"].parse().unwrap());
        assert!(row >= 1 && col >= 1, "{r:?}");
        let (x, y): (f64, f64) = (r["peak_x"].parse().unwrap(), r["peak_y"].parse().unwrap());
        assert!(x >= 0.0 && y >= 0.0, "{r:?}");
        assert!(r["figure"].starts_with("macaw__") && one.join(&r["figure"]).is_file(), "{r:?}");
    }

    // The shards write into the same folder (their figures record it), after the first run's
    // outputs are moved away.
    std::fs::rename(&one, &sharded).unwrap();
    for k in ["1/3", "2/3", "3/3"] {
        explain(&photos, &one, &["--shard", k]);
    }
    same_tree(&tree(&one), &full, "the three shards must write exactly what one run writes");

    // A rerun redoes nothing: every finished figure keeps its modification time.
    let svg = one.join("bunting__compare.svg");
    let before = std::fs::metadata(&svg).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    explain(&photos, &one, &[]);
    assert_eq!(std::fs::metadata(&svg).unwrap().modified().unwrap(), before);
    same_tree(&tree(&one), &full, "a rerun changes nothing");
}

#[test]
fn figures_carry_their_provenance_and_remake_rebuilds_them() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = inputs(tmp.path());
    let out = tmp.path().join("out");
    let extra =
        ["--format", "png", "--dpi", "96", "--title", "Owls & <friends>", "--caption", "Demo.", "--scale", "0.05mm"];
    explain(&photos, &out, &extra);
    let fig = out.join("owl__compare.png");
    let prov = intr_explorer::figure::read_provenance(&fig).unwrap();
    let sha = |p: &Path| intr_explorer::files::sha256_file(p).unwrap();
    assert_eq!(prov["model_sha256"], sha(Path::new(&model())));
    assert_eq!(prov["image_sha256"], sha(&photos.join("owl.webp")));
    assert_eq!(prov["image"], "owl.webp");
    for key in
        ["app", "classes_sha256", "class", "layer", "heads", "normalisation", "colormap", "threshold", "interpolation"]
    {
        assert!(prov.contains_key(key), "provenance lacks {key}: {prov:?}");
    }
    let before = std::fs::read(&fig).unwrap();
    // Remake from a copy (as one would from a figure found in a manuscript folder): the figure is
    // made again in its place, and nothing of its batch is touched.
    let copy = tmp.path().join("found.png");
    std::fs::rename(&fig, &copy).unwrap();
    let batch = tree(&out);
    let o = run(&["remake", &copy.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&copy).unwrap(), before, "remake gives the same figure");
    same_tree(&tree(&out), &batch, "remake never touches its batch");
    // Or into a folder of one's choice.
    let elsewhere = tmp.path().join("manuscript");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let o = run(&["remake", &copy.display().to_string(), "--out", &elsewhere.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(elsewhere.join("found.png")).unwrap(), before);
    same_tree(&tree(&out), &batch, "remake never touches its batch");
}

#[test]
fn a_rerun_with_other_options_remakes_its_figures_and_says_what_it_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(parity_dir().join("Painted_Bunting_0004_16641.jpg"), photos.join("bunting.jpg")).unwrap();
    let out = tmp.path().join("out");
    let (m, p, o) = (model(), photos.display().to_string(), out.display().to_string());
    let go = |extra: &[&str]| {
        let mut args = vec!["explain", "--model", &m, "--out", &o];
        args.extend_from_slice(extra);
        args.push(&p);
        let r = run(&args);
        assert!(r.status.success(), "{}", stderr(&r));
        stderr(&r)
    };
    let first = go(&[]);
    let svgs: Vec<PathBuf> = tree(&out).keys().filter(|k| k.ends_with(".svg")).map(|k| out.join(k)).collect();
    assert_eq!(svgs.len(), 1, "{svgs:?}");
    let svg = &svgs[0];
    assert!(first.contains("1 made, 0 reused"), "{first}");
    let viridis = std::fs::read(svg).unwrap();
    assert!(go(&[]).contains("0 made, 1 reused"), "the same plan reuses the figure");
    let magma = go(&["--colormap", "magma"]);
    assert!(magma.contains("1 made, 0 reused"), "{magma}");
    assert_ne!(std::fs::read(svg).unwrap(), viridis, "the figure was made again with the new colormap");
    let prov = intr_explorer::figure::read_provenance(svg).unwrap();
    assert_eq!(prov["colormap"], "magma");
    // A bad value is refused even when everything would be reused.
    let r = run(&["explain", "--model", &m, "--out", &o, "--colormap", "magma", "--opacity", "2", &p]);
    assert_eq!(r.status.code(), Some(2), "{}", stderr(&r));
}

#[test]
fn an_unwritable_output_names_the_path_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = inputs(tmp.path());
    // The output "folder" is an existing file.
    let blocker = tmp.path().join("taken");
    std::fs::write(&blocker, b"x").unwrap();
    let o = explain(&photos, &blocker.join("out"), &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&blocker.display().to_string()), "{}", stderr(&o));
    assert_eq!(std::fs::read(&blocker).unwrap(), b"x");
}

/// The cells of one CSV line (fields with commas or quotes are quoted, quotes doubled).
fn csv_cells(line: &str) -> Vec<String> {
    let (mut cells, mut cell, mut quoted, mut chars) = (Vec::new(), String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(std::mem::take(&mut cell)),
            (c, _) => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

/// Reads `summary.csv` into rows of header → value; every row must have every column.
fn summary_rows(out: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    let mut lines = text.lines();
    let header = csv_cells(lines.next().unwrap());
    lines
        .map(|l| {
            let cells = csv_cells(l);
            assert_eq!(cells.len(), header.len(), "{l}");
            header.iter().cloned().zip(cells).collect()
        })
        .collect()
}

#[test]
fn the_summary_says_what_each_last_layer_head_is_worth_to_the_class() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(parity_dir().join("Painted_Bunting_0004_16641.jpg"), photos.join("bunting.jpg")).unwrap();
    let (m, p) = (model(), photos.display().to_string());
    let explain_layer = |layer: &str, out: &Path| {
        let o = out.display().to_string();
        let o = run(&["explain", "--model", &m, "--class", "top3", "--layer", layer, "--out", &o, &p]);
        assert!(o.status.success(), "{}", stderr(&o));
    };

    let last = tmp.path().join("last");
    explain_layer("2", &last);
    let rows = summary_rows(&last);
    assert_eq!(rows.len(), 3 * 5, "3 classes × (4 heads + mean)");
    let num = |r: &BTreeMap<String, String>, k: &str| -> f32 { r[k].parse().unwrap_or_else(|_| panic!("{k}: {r:?}")) };
    let mut moved = 0;
    for (k, r) in rows.iter().enumerate() {
        // Rows come class by class in ranking order, so the class's probability is the ranking's.
        let rank = k / 5 + 1;
        assert_eq!(r["class"], r[&format!("top{rank}")], "{r:?}");
        assert!((num(r, "class_probability") - num(r, &format!("top{rank}_probability"))).abs() < 1e-6, "{r:?}");
        if r["head"] == "mean" {
            assert_eq!(r["probability_if_evened"], "", "the mean is not a head: {r:?}");
            assert_eq!(r["head_rank"], "", "the mean is not ranked: {r:?}");
        } else {
            let evened = num(r, "probability_if_evened");
            assert!((0.0..=1.0).contains(&evened), "{r:?}");
            moved += usize::from((evened - num(r, "class_probability")).abs() > 1e-6);
        }
    }
    assert!(moved > 0, "no head's evening changed any class's probability: {rows:?}");
    // Each class's four heads carry ranks 1 to 4, each with the class's probability once it and
    // the heads ranked below it are evened.
    for class_rows in rows.chunks(5) {
        let mut by_rank: Vec<(usize, f32)> = class_rows[..4]
            .iter()
            .map(|r| (r["head_rank"].parse().unwrap(), num(r, "cumulative_probability_if_evened")))
            .collect();
        by_rank.sort_by_key(|x| x.0);
        assert_eq!(by_rank.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2, 3, 4], "{class_rows:?}");
        assert!(by_rank.iter().all(|x| (0.0..=1.0).contains(&x.1)), "{class_rows:?}");
    }
    // Every row names the model and says whether the photo looked like something it knows.
    for r in &rows {
        assert_eq!(r["model"], "tiny_postnorm_sine.pth", "{r:?}");
        let score = num(r, "out_of_domain_score");
        assert!((0.0..=1.0).contains(&score), "{r:?}");
        assert_eq!(r["out_of_domain"], (score >= 0.1).to_string(), "{r:?}");
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(last.join("summary.json")).unwrap()).unwrap();
    let heads = json[0]["heads"].as_array().unwrap();
    assert!(heads[0]["probability_if_evened"].is_number() && heads[4]["probability_if_evened"].is_null());

    // A record written before these fields existed still counts as finished, and its rows leave
    // them empty rather than inventing values.
    let record = last.join(".records/bunting.json");
    let mut old: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    for h in old["heads"].as_array_mut().unwrap() {
        let h = h.as_object_mut().unwrap();
        h.remove("class_probability");
        h.remove("probability_if_evened");
        h.remove("head_rank");
        h.remove("cumulative_probability_if_evened");
    }
    std::fs::write(&record, serde_json::to_vec(&old).unwrap()).unwrap();
    explain_layer("2", &last);
    let rows = summary_rows(&last);
    assert_eq!(rows.len(), 15);
    assert!(
        rows.iter().all(|r| r["class_probability"].is_empty()
            && r["probability_if_evened"].is_empty()
            && r["head_rank"].is_empty()),
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| !r["entropy"].is_empty()), "{rows:?}");

    // The evening is about the last layer: the first layer's heads have no figure.
    let first = tmp.path().join("first");
    explain_layer("1", &first);
    let rows = summary_rows(&first);
    assert_eq!(rows.len(), 15);
    assert!(rows.iter().all(|r| r["probability_if_evened"].is_empty() && r["head_rank"].is_empty()), "{rows:?}");
}

/// Six generated birds of one species (the demo model's), and that species' name.
fn six_birds(dir: &Path) -> (Vec<String>, String) {
    let generated = dir.join("gen");
    let o = run(&[
        "synth",
        "--out",
        &generated.display().to_string(),
        "--count",
        "96",
        "--val-fraction",
        "0",
        "--seed",
        "5",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let species = std::fs::read_dir(generated.join("train")).unwrap().map(|e| e.unwrap().path()).min().unwrap();
    let mut photos: Vec<String> =
        std::fs::read_dir(&species).unwrap().map(|e| e.unwrap().path().display().to_string()).collect();
    photos.sort();
    assert_eq!(photos.len(), 6, "{photos:?}");
    (photos, species.file_name().unwrap().to_string_lossy().into_owned())
}

#[test]
fn a_sheet_over_six_photos_has_six_rows_of_heads_and_mean_named_as_the_heads_are() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, species) = six_birds(tmp.path());
    let config = tmp.path().join("config");
    let with_config = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_intr-explorer"))
            .args(args)
            .env("INTR_EXPLORER_CONFIG", &config)
            .output()
            .unwrap()
    };
    let o = with_config(&["head-names", "set", "2", "crown"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = tmp.path().join("out");
    let mut args = vec!["explain", "--sheet", "--class", &species, "--out", out.to_str().unwrap()];
    args.extend(photos.iter().map(String::as_str));
    let o = with_config(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 specimen sheet"), "{}", stderr(&o));
    let sheets: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("sheet__"))
        .collect();
    assert_eq!(sheets.len(), 1, "one sheet for the one class: {sheets:?}");
    let svg = std::fs::read_to_string(&sheets[0]).unwrap();
    // Six rows of the demo model's 8 heads and their mean, each row named by its photo.
    assert_eq!(svg.matches("<image ").count(), 6 * 9, "six rows of nine panels");
    for p in &photos {
        let name = Path::new(p).file_name().unwrap().to_string_lossy().into_owned();
        assert!(svg.contains(&format!(">{name}</text>")), "row of {name}");
    }
    assert!(svg.contains(">crown</text>") && svg.contains("Heads: 2 = crown."), "the head's name labels its column");
    assert!(svg.contains(">mean</text>"));
    // A rerun reuses every photo's figures and still writes the whole sheet.
    std::fs::remove_file(&sheets[0]).unwrap();
    let o = with_config(&args);
    assert!(stderr(&o).contains("6 reused") && stderr(&o).contains("1 specimen sheet"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&sheets[0]).unwrap(), svg);
    // A sheet needs every photo: it cannot be sharded.
    let mut sharded = args.clone();
    sharded.extend(["--shard", "1/2"]);
    let o = with_config(&sharded);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--sheet") && stderr(&o).contains("shard"), "{}", stderr(&o));
}

#[test]
fn a_contrast_figure_shows_two_classes_difference_and_remake_rebuilds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (photos, _) = six_birds(tmp.path());
    let out = tmp.path().join("out");
    let o = run(&["explain", "--contrast", "runner-up", "--format", "png", "--out", out.to_str().unwrap(), &photos[0]]);
    assert!(o.status.success(), "{}", stderr(&o));
    let contrast: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("__minus__"))
        .collect();
    assert_eq!(contrast.len(), 1, "{contrast:?}");
    let prov = intr_explorer::figure::read_provenance(&contrast[0]).unwrap();
    let view: intr_explorer::figure::View = serde_json::from_str(&prov["view"]).unwrap();
    let intr_explorer::figure::View::Contrast { first, second, .. } = view else { panic!("{view:?}") };
    assert_ne!(first, second);
    // The top class minus the runner-up: the photo's two best classes, in order.
    let stem = Path::new(&photos[0]).file_stem().unwrap().to_string_lossy().into_owned();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(".records").join(format!("{stem}.json"))).unwrap()).unwrap();
    let top = |i: usize| record["top"][i][0].as_str().unwrap().to_string();
    assert_eq!(prov["class"], format!("{} minus {}", top(0), top(1)), "{record}");
    assert!(prov["colormap"].starts_with("viridis"), "the run's look is recorded: {prov:?}");
    let before = std::fs::read(&contrast[0]).unwrap();
    std::fs::remove_file(&contrast[0]).unwrap();
    let copy = tmp.path().join("found.png");
    std::fs::write(&copy, &before).unwrap();
    let o = run(&["remake", &copy.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&copy).unwrap(), before, "remake gives the same contrast figure");
    // A class that does not exist is refused before any work, naming the flag.
    let o = run(&["explain", "--contrast", "No Such Bird", "--out", out.to_str().unwrap(), &photos[0]]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--contrast No Such Bird"), "{}", stderr(&o));
}
