//! End-to-end: the batch runner shared by `pathology embed`, `radiology embed` and `satellite
//! embed`: shards that together give what one run gives, a resumed run that skips what finished,
//! a bad raster left out while the good ones are written (no hidden `.partial` files), and the
//! exit status when every input failed (`dinoadapt_datasets::batch::ALL_FAILED`).

mod common;

use std::path::{Path, PathBuf};

use common::{dinoadapt, files_under, read_tensors, shared, table};
use dinoadapt_datasets::batch::ALL_FAILED;

fn model(shared: &Path) -> String {
    shared
        .join("fixtures/hf_dinov2_reg")
        .to_str()
        .unwrap()
        .to_string()
}

fn hidden(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect()
}

/// `radiology embed` of the three inputs into `out`, with `extra` flags.
fn radiology_embed(shared: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let d = shared.join("data");
    let (m, o) = (model(shared), out.to_str().unwrap().to_string());
    let inputs = [
        d.join("nifti/anatomical.nii"),
        d.join("dicom/series_ct5n"),
        d.join("dicom/CT_small.dcm"),
    ];
    let mut args: Vec<&str> = vec!["radiology", "embed", "--model", &m, "--size", "56"];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    args.extend(["-o", &o, "--quiet"]);
    args.extend_from_slice(extra);
    dinoadapt(&args)
}

fn column(df: &polars::prelude::DataFrame, name: &str) -> Vec<String> {
    let c = df
        .column(name)
        .unwrap()
        .cast(&polars::prelude::DataType::String)
        .unwrap();
    let c = c.str().unwrap();
    (0..df.height())
        .map(|i| c.get(i).unwrap_or("null").to_string())
        .collect()
}

#[test]
fn radiology_shards_together_give_the_whole_batch_and_a_resumed_run_skips_done_volumes() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    assert!(radiology_embed(&shared, &whole, &[]).status.success());
    assert!(
        !whole.join("status").exists(),
        "a plain run keeps no statuses"
    );
    let volumes = table(&whole.join("volumes.parquet"));
    assert_eq!(volumes.height(), 3);
    assert_eq!(column(&volumes, "status"), ["ok", "ok", "ok"]);

    // Two shards into one folder: each its share, then the join of both.
    let sharded = tmp.path().join("sharded");
    let r = radiology_embed(&shared, &sharded, &["--shard", "0/2"]);
    assert!(r.status.success());
    assert_eq!(
        table(&sharded.join("volumes.parquet")).height(),
        2,
        "inputs 0 and 2"
    );
    let r = radiology_embed(&shared, &sharded, &["--shard", "1/2"]);
    assert!(r.status.success());
    let joined = table(&sharded.join("volumes.parquet"));
    for c in [
        "input_index",
        "volume_id",
        "status",
        "regions",
        "feature_row",
    ] {
        assert_eq!(column(&joined, c), column(&volumes, c), "{c}");
    }
    for id in column(&volumes, "volume_id") {
        let name = format!("{id}.safetensors");
        assert_eq!(
            std::fs::read(sharded.join(&name)).unwrap(),
            std::fs::read(whole.join(&name)).unwrap(),
            "{name}"
        );
    }
    assert_eq!(
        std::fs::read(sharded.join("volumes.safetensors")).unwrap(),
        std::fs::read(whole.join("volumes.safetensors")).unwrap(),
        "the pooled features of the joined shards"
    );

    // Resume: the NIfTI volume's feature file is gone (a run cut off); only it is redone.
    let nifti_id = &column(&volumes, "volume_id")[0];
    std::fs::remove_file(sharded.join(format!("{nifti_id}.safetensors"))).unwrap();
    let dicom_id = &column(&volumes, "volume_id")[1];
    let kept = sharded.join(format!("{dicom_id}.safetensors"));
    let before = std::fs::metadata(&kept).unwrap().modified().unwrap();
    let r = radiology_embed(&shared, &sharded, &["--resume"]);
    assert!(r.status.success());
    let log = String::from_utf8_lossy(&r.stderr);
    assert!(
        log.contains("1 inputs done, 2 already finished, 0 failed"),
        "{log}"
    );
    assert_eq!(
        std::fs::metadata(&kept).unwrap().modified().unwrap(),
        before
    );
    assert_eq!(
        std::fs::read(sharded.join(format!("{nifti_id}.safetensors"))).unwrap(),
        std::fs::read(whole.join(format!("{nifti_id}.safetensors"))).unwrap(),
    );
    assert_eq!(
        std::fs::read(sharded.join("volumes.safetensors")).unwrap(),
        std::fs::read(whole.join("volumes.safetensors")).unwrap(),
    );
    assert!(hidden(&sharded).is_empty(), "{:?}", hidden(&sharded));
}

#[test]
fn a_bad_raster_is_left_out_and_the_good_ones_are_embedded() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = shared.join("data/satellite/rmnp-rgb.tif");
    let good = tmp.path().join("good.tif");
    std::fs::copy(&src, &good).unwrap();
    // A truncated copy opens (its header is whole) but fails on the blocks it lacks.
    let bytes = std::fs::read(&src).unwrap();
    let bad = tmp.path().join("truncated.tif");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let m = model(&shared);
    let embed = |out: &Path, rasters: &[&Path], extra: &[&str]| {
        let o = out.to_str().unwrap();
        let mut args = vec!["satellite", "embed", "--model", &m, "--size", "56", "-o", o];
        args.extend(rasters.iter().map(|p| p.to_str().unwrap()));
        args.push("--quiet");
        args.extend_from_slice(extra);
        dinoadapt(&args)
    };

    // One features file: the good raster's chips, as if it had been given alone.
    let alone = tmp.path().join("alone/chips.safetensors");
    assert!(embed(&alone, &[&good], &[]).status.success());
    let both = tmp.path().join("both/chips.safetensors");
    let r = embed(&both, &[&bad, &good], &[]);
    assert!(r.status.success(), "one raster of two embedded");
    let log = String::from_utf8_lossy(&r.stderr);
    assert!(log.contains("truncated.tif"), "{log}");
    assert!(
        log.contains("1 rasters done, 0 already finished, 1 failed"),
        "{log}"
    );
    assert_eq!(
        read_tensors(&both)["cls"],
        read_tensors(&alone)["cls"],
        "the good raster's features"
    );
    assert!(hidden(both.parent().unwrap()).is_empty());

    // Every raster bad: nothing written, no partial file, the all-failed exit status.
    let none = tmp.path().join("none/chips.safetensors");
    let r = embed(&none, &[&bad], &[]);
    assert_eq!(r.status.code(), Some(ALL_FAILED as i32));
    assert!(files_under(none.parent().unwrap()).is_empty());

    // Per raster (--resume): the good raster's files and a manifest row for each.
    let per = tmp.path().join("per/chips.safetensors");
    let r = embed(&per, &[&bad, &good], &["--resume"]);
    assert!(r.status.success());
    let folder = tmp.path().join("per/chips");
    let manifest = table(&folder.join("manifest.parquet"));
    assert_eq!(column(&manifest, "raster_id"), ["truncated", "good"]);
    assert_eq!(column(&manifest, "status"), ["failed", "done"]);
    assert_eq!(
        read_tensors(&folder.join("good.safetensors"))["cls"],
        read_tensors(&alone)["cls"],
        "one raster normalised on its own is the raster alone"
    );
    assert!(folder.join("good.parquet").is_file());
    assert!(!folder.join("truncated.safetensors").exists());
    assert!(hidden(&folder).is_empty(), "{:?}", hidden(&folder));
    // Resumed: the good raster is skipped, the bad one tried again.
    let r = embed(&per, &[&bad, &good], &["--resume"]);
    assert!(r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("0 rasters done, 1 already finished, 1 failed")
    );
}

#[test]
fn a_batch_in_which_every_input_failed_exits_with_the_all_failed_status() {
    let Some(shared) = shared() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-file.nii");
    let m = model(&shared);
    let o = tmp.path().join("radiology");
    let r = dinoadapt(&[
        "radiology",
        "embed",
        "--model",
        &m,
        missing.to_str().unwrap(),
        "-o",
        o.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(r.status.code(), Some(ALL_FAILED as i32));
    assert_eq!(
        column(&table(&o.join("volumes.parquet")), "status"),
        ["failed"]
    );

    let svs = std::fs::read(shared.join("data/pathology/CMU-1-Small-Region.svs")).unwrap();
    let slide = tmp.path().join("truncated.svs");
    std::fs::write(&slide, &svs[..svs.len() / 3]).unwrap();
    let o = tmp.path().join("pathology");
    let r = dinoadapt(&[
        "pathology",
        "embed",
        "--model",
        &m,
        slide.to_str().unwrap(),
        "-o",
        o.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(r.status.code(), Some(ALL_FAILED as i32));
    assert_eq!(
        column(&table(&o.join("manifest.parquet")), "status"),
        ["failed"]
    );
    // --overwrite still records the slide (the manifest is made from the status files).
    let r = dinoadapt(&[
        "pathology",
        "tissue",
        slide.to_str().unwrap(),
        "-o",
        o.to_str().unwrap(),
        "--overwrite",
        "--quiet",
    ]);
    assert_eq!(r.status.code(), Some(ALL_FAILED as i32));
    assert_eq!(
        column(&table(&o.join("manifest.parquet")), "stage"),
        ["tissue"]
    );
    // A rerun skips nothing (the slide failed) and fails again; a good slide beside it is
    // enough for success.
    let r = dinoadapt(&[
        "pathology",
        "tissue",
        slide.to_str().unwrap(),
        shared
            .join("data/pathology/CMU-1-Small-Region.svs")
            .to_str()
            .unwrap(),
        "-o",
        o.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(r.status.success());
}

/// `embed --source` of a `[data.source]` table in `dir/source.toml`, with `extra` flags.
fn embed_source(shared: &Path, dir: &Path, table: &str, extra: &[&str]) -> std::process::Output {
    let recipe = dir.join("source.toml");
    std::fs::write(&recipe, format!("[data.source]\n{table}")).unwrap();
    let (m, r) = (model(shared), recipe.to_str().unwrap().to_string());
    let mut args = vec!["embed", "--model", &m, "--source", &r, "--quiet"];
    args.extend(extra);
    dinoadapt(&args)
}

#[test]
fn embed_source_runs_any_domains_table_as_a_batch_and_matches_the_domain_command() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let d = shared.join("data");
    let sat = d.join("satellite");
    // A one-band raster among two RGB ones: its row says why, the others are embedded.
    let rasters = format!(
        "domain = \"satellite\"\nchip_size = 56\npaths = [{:?}, {:?}, {:?}]\n",
        sat.join("rmnp-rgb.tif"),
        sat.join("merc.tif"),
        sat.join("rgbn.tif")
    );
    let whole = dir.path().join("whole");
    let w = whole.to_str().unwrap();
    assert!(embed_source(&shared, dir.path(), &rasters, &["--out", w])
        .status
        .success());
    let manifest = table(&whole.join("manifest.parquet"));
    assert_eq!(column(&manifest, "input_id"), ["rmnp-rgb", "merc", "rgbn"]);
    assert_eq!(column(&manifest, "status"), ["ok", "failed", "ok"]);
    let why = &column(&manifest, "error")[1];
    assert!(why.contains("band 2 does not exist"), "{why}");
    // Two shards give the same files as one run; the shard of the bad raster alone exits 3.
    let sharded = dir.path().join("sharded");
    let s = sharded.to_str().unwrap();
    for (shard, success) in [("0/2", true), ("1/2", false)] {
        let out = embed_source(
            &shared,
            dir.path(),
            &rasters,
            &["--out", s, "--shard", shard],
        );
        assert_eq!(out.status.success(), success, "shard {shard}");
        if !success {
            assert_eq!(out.status.code(), Some(i32::from(ALL_FAILED)));
        }
    }
    for f in ["features/rmnp-rgb.safetensors", "features/rgbn.safetensors"] {
        assert_eq!(
            std::fs::read(whole.join(f)).unwrap(),
            std::fs::read(sharded.join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        column(&table(&sharded.join("manifest.parquet")), "status"),
        ["ok", "failed", "ok"]
    );
    assert_eq!(
        read_tensors(&whole.join("features/rgbn.safetensors"))["cls"].0,
        [80, 64]
    );

    // A slide through the pathology plugin gives the tiles and features of `pathology embed`.
    let slide = d.join("pathology/CMU-1-Small-Region.svs");
    let slides =
        format!("domain = \"pathology\"\nmpp = [2.0]\ntile_size = 112\npaths = [{slide:?}]\n");
    let generic = dir.path().join("generic");
    let g = generic.to_str().unwrap();
    assert!(embed_source(&shared, dir.path(), &slides, &["--out", g])
        .status
        .success());
    let own = dir.path().join("own");
    let m = model(&shared);
    let out = dinoadapt(&[
        "pathology",
        "embed",
        "--model",
        &m,
        slide.to_str().unwrap(),
        "-o",
        own.to_str().unwrap(),
        "--target-mpp",
        "2.0",
        "--size",
        "112",
        "--no-h5",
        "--quiet",
    ]);
    assert!(out.status.success());
    let a = read_tensors(&generic.join("features/CMU-1-Small-Region.safetensors"));
    let b = read_tensors(&own.join("features/CMU-1-Small-Region.safetensors"));
    assert_eq!(a["cls"], b["cls"]);
    assert_eq!(a["patch"], b["patch"]);
    let regions = table(&generic.join("regions/CMU-1-Small-Region.parquet"));
    assert_eq!(regions.height(), a["cls"].0[0]);
}

/// `--strict` stops a batch at its first failed item (exit status 4, the items after it left
/// alone), and `radiology convert` follows the batch rule: every volume failed -> exit 3.
#[test]
fn a_strict_batch_stops_at_the_first_failure_and_convert_follows_the_exit_rule() {
    let Some(shared) = shared() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sat = shared.join("data/satellite");
    let rasters = format!(
        "domain = \"satellite\"\nchip_size = 56\npaths = [{:?}, {:?}]\n",
        sat.join("merc.tif"),
        sat.join("rmnp-rgb.tif")
    );
    let out = dir.path().join("strict");
    let o = out.to_str().unwrap();
    let run = embed_source(&shared, dir.path(), &rasters, &["--out", o, "--strict"]);
    assert_eq!(run.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&run.stderr).contains("--strict: stopped"));
    assert!(!out.join("features/rmnp-rgb.safetensors").exists());
    assert_eq!(
        column(&table(&out.join("manifest.parquet")), "status"),
        ["failed"]
    );
    // Without --strict the good raster is embedded.
    let lenient = dir.path().join("lenient");
    let l = lenient.to_str().unwrap();
    assert!(embed_source(&shared, dir.path(), &rasters, &["--out", l])
        .status
        .success());
    assert!(lenient.join("features/rmnp-rgb.safetensors").is_file());

    let bad = dir.path().join("bad.nii");
    std::fs::write(&bad, b"not a volume").unwrap();
    let conv = dir.path().join("converted");
    let out = dinoadapt(&[
        "radiology",
        "convert",
        bad.to_str().unwrap(),
        "-o",
        conv.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(i32::from(ALL_FAILED)));
    assert!(conv.join("volumes.parquet").is_file());
}
