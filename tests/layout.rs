//! The code map's rule: code in a room of `src/` imports only rooms earlier in the README's order, so there
//! are no cycles between folders and lower rooms never name higher ones. Doc comments may link anywhere.

use std::path::Path;

const ROOMS: [&str; 16] =
    ["error", "limits", "lanes", "rng", "io", "schedule", "particles", "compose", "model", "nets", "registry", "diffusion", "wfr", "train", "report", "jobs"];

/// Crate-root re-exports, by the room that defines them.
fn room_of(name: &str) -> &str {
    match name {
        "GaussianMixture" | "ScoreModel" => "model",
        "Error" | "Result" => "error",
        "Composition" | "ComposeKind" | "CompositionSpec" | "MixtureMethod" => "compose",
        "Sampler" | "SampleRun" | "SamplerConfig" | "StepInfo" | "DivergenceEstimator" | "Probe" | "Integrator" | "DriftGamma" | "MoveConfig" => "diffusion",
        "VpSchedule" | "TimeGrid" => "schedule",
        "ResamplePolicy" | "Resampler" => "particles",
        "load_model" => "registry",
        other => other,
    }
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn rooms_import_only_earlier_rooms() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let rank = |r: &str| ROOMS.iter().position(|x| *x == r);
    let mut violations = Vec::new();
    for f in all {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        let Some(own) = rank(&first) else { continue }; // lib.rs, bin/
        for (no, line) in std::fs::read_to_string(&f).unwrap().lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for part in line.split("crate::").skip(1) {
                let name: String = part.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if let Some(r) = rank(room_of(&name)) {
                    if r > own {
                        violations.push(format!("{}:{}: {} names {}", rel.display(), no + 1, first, room_of(&name)));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "imports of later rooms:\n{}", violations.join("\n"));
}

/// A function fits on a screen: at most 80 lines, except `plot::glyph`, which is a font table.
#[test]
fn functions_are_at_most_80_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut long = Vec::new();
    for f in all {
        let text = std::fs::read_to_string(&f).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let l = lines[i];
            let t = l.trim_start();
            let indent = &l[..l.len() - t.len()];
            let is_fn = ["fn ", "pub fn ", "pub(crate) fn "].iter().any(|p| t.starts_with(p)) && l.trim_end().ends_with('{');
            if is_fn {
                let name: String = t.split("fn ").nth(1).unwrap_or("").chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                let close = format!("{indent}}}");
                let end = (i + 1..lines.len()).find(|&j| lines[j] == close).unwrap_or(lines.len());
                if end - i > 80 && name != "glyph" {
                    long.push(format!("{}: {name} ({} lines)", f.strip_prefix(&src).unwrap().display(), end - i));
                }
                i = end;
            }
            i += 1;
        }
    }
    assert!(long.is_empty(), "functions over 80 lines:\n{}", long.join("\n"));
}
