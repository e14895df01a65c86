//! `summary.csv` and `summary.json`: rebuilt from every per-photo record at the end of a run, in
//! input order, so shards run one after another end with the summary of one whole run. Both list
//! the five best classes; heads, layers and grid cells are counted from 1, as in the window.

use std::path::Path;

use anyhow::{Context, Result};

use super::records::PhotoRecord;
use crate::files::write_atomic;

/// Rebuilds `summary.json` and `summary.csv` from every record of the run, in input order.
pub fn write_summaries(out: &Path, records_dir: &Path, stems: &[String]) -> Result<()> {
    let mut records = Vec::new();
    for stem in stems {
        let p = records_dir.join(format!("{stem}.json"));
        if let Ok(bytes) = std::fs::read(&p) {
            let r: PhotoRecord =
                serde_json::from_slice(&bytes).with_context(|| format!("{}: damaged record", p.display()))?;
            records.push(r);
        }
    }
    let json = serde_json::to_vec_pretty(&records)?;
    write_atomic(&out.join("summary.json"), |tmp| Ok(std::fs::write(tmp, &json)?))?;
    let mut csv = String::from(
        "image,image_sha256,top1,top1_probability,top2,top2_probability,top3,top3_probability,top4,top4_probability,top5,top5_probability,class,layer,head,head_name,peak_row,peak_col,peak_x,peak_y,peak_value,entropy,class_probability,probability_if_evened,head_rank,cumulative_probability_if_evened,figure,model,out_of_domain_score,out_of_domain,error\n",
    );
    let field =
        |s: &str| if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() };
    for r in &records {
        let mut top = String::new();
        for k in 0..5 {
            match r.top.get(k) {
                Some((n, p)) => top.push_str(&format!("{},{p:.6},", field(n))),
                None => top.push_str(",,"),
            }
        }
        // What made the row and whether the photo looked like something the model knows.
        let model = field(r.model.as_deref().unwrap_or(""));
        let ood = r.out_of_domain.map(|o| format!("{:.4},{}", o.score, o.flagged)).unwrap_or_else(|| ",".into());
        let err = field(r.error.as_deref().unwrap_or(""));
        let tail = format!("{model},{ood},{err}");
        if r.heads.is_empty() {
            csv.push_str(&format!("{},{},{top},,,,,,,,,,,,,,,{tail}\n", field(&r.image), r.image_sha256));
        }
        for h in &r.heads {
            csv.push_str(&format!(
                "{},{},{top}{},{},{},{},{},{},{},{},{:.6e},{:.4},{},{},{},{},{},{tail}\n",
                field(&r.image),
                r.image_sha256,
                field(&h.class),
                h.layer.map(|l| l.to_string()).unwrap_or_default(),
                h.head,
                field(h.head_name.as_deref().unwrap_or("")),
                h.peak_row,
                h.peak_col,
                h.peak_x.map(|x| format!("{x:.1}")).unwrap_or_default(),
                h.peak_y.map(|y| format!("{y:.1}")).unwrap_or_default(),
                h.peak_value,
                h.entropy,
                h.class_probability.map(|p| format!("{p:.6}")).unwrap_or_default(),
                h.probability_if_evened.map(|p| format!("{p:.6}")).unwrap_or_default(),
                h.head_rank.map(|r| r.to_string()).unwrap_or_default(),
                h.cumulative_probability_if_evened.map(|p| format!("{p:.6}")).unwrap_or_default(),
                field(h.figure.as_deref().unwrap_or(""))
            ));
        }
    }
    write_atomic(&out.join("summary.csv"), |tmp| Ok(std::fs::write(tmp, csv.as_bytes())?))
}
