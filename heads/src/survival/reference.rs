//! The reference values of `heads/tests/data/survival_reference.json` (written by
//! `make_survival_reference.py` beside it with lifelines, scikit-survival, pandas and torch).

use serde_json::Value;

pub fn reference() -> Value {
    // The crate's folder as cargo gives it at run time (a test binary built in another
    // checkout keeps that checkout's compile-time path).
    let path = std::env::var("CARGO_MANIFEST_DIR")
        .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
        + "/tests/data/survival_reference.json";
    serde_json::from_str(&std::fs::read_to_string(path).expect("survival_reference.json"))
        .expect("survival_reference.json is JSON")
}

pub fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

pub fn usizes(v: &Value) -> Vec<usize> {
    f64s(v).into_iter().map(|x| x as usize).collect()
}

pub fn bools(v: &Value) -> Vec<bool> {
    f64s(v).into_iter().map(|x| x != 0.0).collect()
}

pub fn cases<'a>(r: &'a Value, key: &str) -> &'a Vec<Value> {
    r[key].as_array().expect("cases")
}
