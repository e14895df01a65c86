//! `parts`: every head of every class scored against part annotations, on freshly generated birds
//! (their masks) and on a CUB-format set made from the same birds (keypoints at the parts'
//! centroids), which must name the clearly aligned heads alike; bad annotations are named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_intr-explorer")).args(args).env("INTR_EXPLORER_CONFIG", config).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Freshly generated birds (the demo model's species), six per species.
fn birds(dir: &Path) -> PathBuf {
    let data = dir.join("birds");
    let o = run(
        &["synth", "--out", data.to_str().unwrap(), "--count", "96", "--val-fraction", "0", "--seed", "31"],
        &dir.join("config"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    data
}

/// Head `h`'s best part and rate in a hit table (`hits`, `cases`) of the JSON report.
fn best(table: &serde_json::Value, parts: &[String], h: usize) -> Option<(String, f64)> {
    let (hits, cases) = (&table["hits"][h], &table["cases"][h]);
    (0..parts.len())
        .map(|p| {
            let c = cases[p].as_f64().unwrap();
            (p, if c > 0.0 { hits[p].as_f64().unwrap() / c } else { 0.0 })
        })
        .filter(|&(_, r)| r > 0.0)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(p, r)| (parts[p].clone(), r))
}

/// The same birds in CUB-200-2011's layout: images.txt, image_class_labels.txt, parts/parts.txt
/// and parts/part_locs.txt with each part's keypoint at the centroid of its mask.
fn as_cub(birds: &Path, dir: &Path) -> PathBuf {
    let cub = dir.join("cub");
    std::fs::create_dir_all(cub.join("parts")).unwrap();
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(birds.join("dataset.json")).unwrap()).unwrap();
    let parts: BTreeMap<u8, String> = info["parts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.parse().unwrap(), v.as_str().unwrap().to_string()))
        .filter(|(k, _)| *k != 0)
        .collect();
    let part_ids: BTreeMap<u8, usize> = parts.keys().enumerate().map(|(i, &l)| (l, i + 1)).collect();
    let parts_txt: String = parts.iter().map(|(l, n)| format!("{} {n}\n", part_ids[l])).collect();
    std::fs::write(cub.join("parts/parts.txt"), parts_txt).unwrap();
    let (mut images, mut labels, mut locs) = (String::new(), String::new(), String::new());
    let mut classes: Vec<PathBuf> =
        std::fs::read_dir(birds.join("train")).unwrap().map(|e| e.unwrap().path()).collect();
    classes.sort();
    let mut id = 0;
    for (c, folder) in classes.iter().enumerate() {
        let class = folder.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::create_dir_all(cub.join("images").join(&class)).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(folder).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            id += 1;
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::copy(&f, cub.join("images").join(&class).join(&name)).unwrap();
            images.push_str(&format!("{id} {class}/{name}\n"));
            labels.push_str(&format!("{id} {}\n", c + 1));
            let mask = birds.join("masks/train").join(&class).join(&name).with_extension("png");
            let m = image::open(&mask).unwrap().into_luma8();
            for (&l, &pid) in &part_ids {
                let pts: Vec<(u32, u32)> =
                    m.enumerate_pixels().filter(|(_, _, p)| p[0] == l).map(|(x, y, _)| (x, y)).collect();
                if pts.is_empty() {
                    locs.push_str(&format!("{id} {pid} 0.0 0.0 0\n"));
                } else {
                    let n = pts.len() as f64;
                    let cx = pts.iter().map(|p| f64::from(p.0)).sum::<f64>() / n;
                    let cy = pts.iter().map(|p| f64::from(p.1)).sum::<f64>() / n;
                    locs.push_str(&format!("{id} {pid} {cx:.1} {cy:.1} 1\n"));
                }
            }
        }
    }
    std::fs::write(cub.join("images.txt"), images).unwrap();
    std::fs::write(cub.join("image_class_labels.txt"), labels).unwrap();
    std::fs::write(cub.join("parts/part_locs.txt"), locs).unwrap();
    cub
}

#[test]
fn on_generated_birds_the_heads_find_the_parts_the_species_differ_in_and_cub_keypoints_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    let data = birds(tmp.path());
    let r = json(&run(&["parts", "--data", data.to_str().unwrap(), "--json"], &config));
    let parts: Vec<String> = serde_json::from_value(r["parts"].clone()).unwrap();
    assert_eq!(parts, ["body", "tail", "wing", "breast", "head", "crown", "beak", "eye"]);
    assert_eq!(r["all"]["photos"], 96);
    assert_eq!(r["format"], "generated");
    let heads = r["all"]["hits"].as_array().unwrap().len();
    assert_eq!(heads, 8);
    // Each class's heads: the parts they clearly look at (hit rate ≥ 0.5) are the parts the species
    // differ in — crown, wing bars, breast spots, tail band — as the demo evaluation found.
    let mut clear: BTreeSet<String> = BTreeSet::new();
    for table in r["per_class"].as_object().unwrap().values() {
        for h in 0..heads {
            if let Some((part, rate)) = best(table, &parts, h).filter(|b| b.1 >= 0.5) {
                assert!(rate <= 1.0);
                clear.insert(part);
            }
        }
    }
    for part in ["crown", "wing", "breast", "tail"] {
        assert!(clear.contains(part), "no head clearly on the {part}: {clear:?}");
    }
    // The suggested names are the best parts over all classes, where the head is on it at least a
    // quarter of the time; the JSON also gives the rates.
    for h in 0..heads {
        let want = best(&r["all"], &parts, h).filter(|b| b.1 >= 0.25);
        let s = &r["suggested"][h];
        let got = (!s.is_null()).then(|| (s["part"].as_str().unwrap().to_string(), s["hit_rate"].as_f64().unwrap()));
        assert_eq!(got.as_ref().map(|g| &g.0), want.as_ref().map(|w| &w.0), "head {}", h + 1);
        if let (Some(g), Some(w)) = (got, want) {
            assert!((g.1 - w.1).abs() < 1e-12, "head {}: {} vs {}", h + 1, g.1, w.1);
            assert_eq!(s["head"], h + 1);
            let listed = r["all"]["rates"][h].as_array().unwrap().iter().map(|v| v.as_f64().unwrap());
            assert!(listed.fold(0.0, f64::max) == g.1, "the rates hold the suggestion's");
        }
    }
    // The same birds as a CUB-format set (keypoints at the parts' centroids): the heads that sit
    // clearly on one part (mask hit rate ≥ 0.5) are given the same name.
    let cub = as_cub(&data, tmp.path());
    let c = json(&run(&["parts", "--data", cub.to_str().unwrap(), "--json"], &config));
    assert_eq!(c["format"], "CUB");
    assert_eq!(c["radius"], 16.0, "one grid cell of the demo model, in photo pixels");
    assert_eq!(c["all"]["photos"], 96);
    let mut compared = 0;
    for h in 0..heads {
        if let Some((part, _)) = best(&r["all"], &parts, h).filter(|b| b.1 >= 0.5) {
            assert_eq!(best(&c["all"], &parts, h).map(|b| b.0), Some(part), "head {}", h + 1);
            compared += 1;
        }
    }
    assert!(compared >= 2, "at least two heads sit clearly on one part");

    // The table, the figure, and the suggested names kept as head names.
    let fig = tmp.path().join("parts.svg");
    let o =
        run(&["parts", "--data", data.to_str().unwrap(), "--figure", fig.to_str().unwrap(), "--take-names"], &config);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("suggested name") && text.lines().count() == 2 + heads, "{text}");
    let svg = std::fs::read_to_string(&fig).unwrap();
    assert!(svg.contains("Where each head looks") && svg.matches("<image ").count() == heads * parts.len());
    let o = run(&["head-names", "list"], &config);
    let listed = String::from_utf8_lossy(&o.stdout);
    let first = r["suggested"].as_array().unwrap().iter().find(|s| !s.is_null()).expect("a suggestion");
    let line = format!("head {}: {}", first["head"], first["part"].as_str().unwrap());
    assert!(listed.contains(&line), "{line} in {listed}");
    assert!(stderr(&o).is_empty() || !stderr(&o).contains("error"), "{}", stderr(&o));
}

#[test]
fn a_folder_without_annotations_or_with_a_bad_line_is_named_with_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    let o = run(&["parts", "--data", tmp.path().to_str().unwrap()], &config);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("holds no part annotations"), "{}", stderr(&o));
    let o = run(&["parts", "--data", tmp.path().join("no/such").to_str().unwrap()], &config);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no/such: does not exist"), "{}", stderr(&o));
    let cub = tmp.path().join("cub");
    std::fs::create_dir_all(cub.join("parts")).unwrap();
    std::fs::write(cub.join("images.txt"), "1 a/b.jpg\n").unwrap();
    std::fs::write(cub.join("parts/parts.txt"), "1 crown\n").unwrap();
    std::fs::write(cub.join("parts/part_locs.txt"), "1 1 10.0 12.0 1\n1 crown\n").unwrap();
    let o = run(&["parts", "--data", cub.to_str().unwrap()], &config);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("part_locs.txt") && err.contains("line 2"), "{err}");
    // A photo that is missing is reported; with none left, the run says so.
    std::fs::write(cub.join("parts/part_locs.txt"), "1 1 10.0 12.0 1\n").unwrap();
    let o = run(&["parts", "--data", cub.to_str().unwrap()], &config);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("b.jpg"), "{}", stderr(&o));
}
