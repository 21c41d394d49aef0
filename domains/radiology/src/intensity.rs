//! Intensity mapping to `[0, 1]`: CT windows (Hounsfield units), MR percentile normalisation,
//! min-max, or none.
//!
//! An [`Intensity`] is what the user asks for (parsed from a string, serialised as the same
//! string); [`Intensity::resolve`] turns it into an [`IntensityMap`] for one volume (percentiles
//! and min-max need the volume's values), which then maps every voxel / pixel.
//!
//! | string              | meaning                                                        |
//! |---------------------|----------------------------------------------------------------|
//! | `lung`              | W1500 L-600: [-1350, 150] HU                                  |
//! | `mediastinum`       | W350 L50: [-125, 225] HU                                      |
//! | `abdomen`           | [-175, 250] HU                                                 |
//! | `bone`              | W1800 L400: [-500, 1300] HU                                   |
//! | `brain`             | W80 L40: [0, 80] HU                                            |
//! | `liver`             | W150 L30: [-45, 105] HU                                        |
//! | `window:LOW,HIGH`   | [LOW, HIGH] in the volume's units                              |
//! | `percentile:P1,P2`  | [P1-th, P2-th percentile] of the volume's non-zero voxels      |
//! | `mr`                | `percentile:0.5,99.5`                                          |
//! | `minmax`            | [min, max] of the volume's finite voxels                       |
//! | `none`              | values unchanged (no clipping)                                 |
//!
//! Windows and percentiles map `low -> 0`, `high -> 1`, linearly, clipped to `[0, 1]`. NaN
//! maps to 0.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A named CT window (Hounsfield units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtWindow {
    Lung,
    Mediastinum,
    Abdomen,
    Bone,
    Brain,
    Liver,
}

impl CtWindow {
    /// Every preset, in documentation order.
    pub const ALL: [CtWindow; 6] = [
        CtWindow::Lung,
        CtWindow::Mediastinum,
        CtWindow::Abdomen,
        CtWindow::Bone,
        CtWindow::Brain,
        CtWindow::Liver,
    ];

    /// The preset's name as parsed and printed.
    pub fn name(self) -> &'static str {
        match self {
            CtWindow::Lung => "lung",
            CtWindow::Mediastinum => "mediastinum",
            CtWindow::Abdomen => "abdomen",
            CtWindow::Bone => "bone",
            CtWindow::Brain => "brain",
            CtWindow::Liver => "liver",
        }
    }

    /// `[low, high]` in HU.
    pub fn range(self) -> (f64, f64) {
        let wl = |w: f64, l: f64| (l - w / 2.0, l + w / 2.0);
        match self {
            CtWindow::Lung => wl(1500.0, -600.0),
            CtWindow::Mediastinum => wl(350.0, 50.0),
            CtWindow::Abdomen => (-175.0, 250.0),
            CtWindow::Bone => wl(1800.0, 400.0),
            CtWindow::Brain => wl(80.0, 40.0),
            CtWindow::Liver => wl(150.0, 30.0),
        }
    }
}

/// How to map a volume's values to `[0, 1]` (see the module docs for the string forms).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Intensity {
    /// A named CT window.
    Ct(CtWindow),
    /// `[low, high]` in the volume's units.
    Window { low: f64, high: f64 },
    /// `[low-th, high-th]` percentile of the non-zero finite voxels (all finite voxels when
    /// every voxel is zero).
    Percentile { low: f64, high: f64 },
    /// `[min, max]` of the finite voxels.
    MinMax,
    /// Unchanged.
    None,
}

impl Intensity {
    /// MR default: `percentile:0.5,99.5`.
    pub const MR_DEFAULT: Intensity = Intensity::Percentile {
        low: 0.5,
        high: 99.5,
    };

    /// The map for a volume with these voxel values (all frames).
    pub fn resolve(&self, values: &[f32]) -> IntensityMap {
        match *self {
            Intensity::Ct(w) => {
                let (low, high) = w.range();
                IntensityMap::Linear { low, high }
            }
            Intensity::Window { low, high } => IntensityMap::Linear { low, high },
            Intensity::Percentile { low, high } => {
                let mut v: Vec<f32> = values
                    .iter()
                    .copied()
                    .filter(|x| x.is_finite() && *x != 0.0)
                    .collect();
                if v.is_empty() {
                    v = values.iter().copied().filter(|x| x.is_finite()).collect();
                }
                match percentiles(&mut v, low, high) {
                    Some((low, high)) => IntensityMap::Linear { low, high },
                    None => IntensityMap::Linear {
                        low: 0.0,
                        high: 1.0,
                    },
                }
            }
            Intensity::MinMax => match crate::volume::IntensityStats::of(values) {
                Some(s) => IntensityMap::Linear {
                    low: s.min,
                    high: s.max,
                },
                None => IntensityMap::Linear {
                    low: 0.0,
                    high: 1.0,
                },
            },
            Intensity::None => IntensityMap::Identity,
        }
    }
}

/// numpy's default (linear) percentiles `p_low`, `p_high` (0..=100) of `v` (reordered).
fn percentiles(v: &mut [f32], p_low: f64, p_high: f64) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut at = |p: f64| -> f64 {
        let pos = p.clamp(0.0, 100.0) / 100.0 * (v.len() - 1) as f64;
        let lo = pos.floor() as usize;
        let frac = pos - lo as f64;
        let (_, a, rest) = v.select_nth_unstable_by(lo, f32::total_cmp);
        let a = f64::from(*a);
        if frac == 0.0 || rest.is_empty() {
            return a;
        }
        let b = rest.iter().copied().fold(f32::INFINITY, f32::min);
        a + frac * (f64::from(b) - a)
    };
    let low = at(p_low);
    let high = at(p_high);
    Some((low, high))
}

/// A resolved intensity map.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum IntensityMap {
    /// `(v - low) / (high - low)` clipped to `[0, 1]`; a step at `low` when `high <= low`.
    Linear { low: f64, high: f64 },
    /// `v` unchanged.
    Identity,
}

impl IntensityMap {
    /// The mapped value (NaN -> 0).
    pub fn map(&self, v: f32) -> f32 {
        if v.is_nan() {
            return 0.0;
        }
        match *self {
            IntensityMap::Identity => v,
            IntensityMap::Linear { low, high } => {
                let v = f64::from(v);
                if high > low {
                    ((v - low) / (high - low)).clamp(0.0, 1.0) as f32
                } else if v > low {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// A string that is not an [`Intensity`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown intensity mapping {0:?}: use a CT preset (lung, mediastinum, abdomen, bone, brain, liver), window:LOW,HIGH, percentile:P1,P2, mr, minmax or none")]
pub struct ParseIntensityError(pub String);

fn two_numbers(s: &str) -> Option<(f64, f64)> {
    let (a, b) = s.split_once(',')?;
    let a: f64 = a.trim().parse().ok()?;
    let b: f64 = b.trim().parse().ok()?;
    (a.is_finite() && b.is_finite() && a < b).then_some((a, b))
}

impl FromStr for Intensity {
    type Err = ParseIntensityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        let err = || ParseIntensityError(s.to_string());
        if let Some(w) = CtWindow::ALL.iter().find(|w| w.name() == t) {
            return Ok(Intensity::Ct(*w));
        }
        if let Some(rest) = t.strip_prefix("window:") {
            let (low, high) = two_numbers(rest).ok_or_else(err)?;
            return Ok(Intensity::Window { low, high });
        }
        if let Some(rest) = t.strip_prefix("percentile:") {
            let (low, high) = two_numbers(rest).ok_or_else(err)?;
            if low < 0.0 || high > 100.0 {
                return Err(err());
            }
            return Ok(Intensity::Percentile { low, high });
        }
        match t.as_str() {
            "mr" => Ok(Intensity::MR_DEFAULT),
            "minmax" => Ok(Intensity::MinMax),
            "none" => Ok(Intensity::None),
            _ => Err(err()),
        }
    }
}

impl fmt::Display for Intensity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Intensity::Ct(w) => f.write_str(w.name()),
            Intensity::Window { low, high } => write!(f, "window:{low},{high}"),
            Intensity::Percentile { low, high } => write!(f, "percentile:{low},{high}"),
            Intensity::MinMax => f.write_str("minmax"),
            Intensity::None => f.write_str("none"),
        }
    }
}

impl TryFrom<String> for Intensity {
    type Error = ParseIntensityError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Intensity> for String {
    fn from(i: Intensity) -> String {
        i.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_and_windows_map_to_unit_range() {
        let ranges: Vec<(&str, (f64, f64))> = CtWindow::ALL
            .iter()
            .map(|w| (w.name(), w.range()))
            .collect();
        assert_eq!(
            ranges,
            [
                ("lung", (-1350.0, 150.0)),
                ("mediastinum", (-125.0, 225.0)),
                ("abdomen", (-175.0, 250.0)),
                ("bone", (-500.0, 1300.0)),
                ("brain", (0.0, 80.0)),
                ("liver", (-45.0, 105.0)),
            ]
        );
        let m = "abdomen".parse::<Intensity>().unwrap().resolve(&[]);
        assert_eq!(m.map(-175.0), 0.0);
        assert_eq!(m.map(250.0), 1.0);
        assert_eq!(m.map(-1000.0), 0.0);
        assert_eq!(m.map(3000.0), 1.0);
        assert!((m.map(37.5) - 0.5).abs() < 1e-6);
        assert_eq!(m.map(f32::NAN), 0.0);
        let w = "window:-100,300".parse::<Intensity>().unwrap();
        assert_eq!(
            w,
            Intensity::Window {
                low: -100.0,
                high: 300.0
            }
        );
        assert!((w.resolve(&[]).map(100.0) - 0.5).abs() < 1e-6);
        assert_eq!(Intensity::None.resolve(&[]).map(-7.5), -7.5);
    }

    #[test]
    fn percentiles_skip_zeros_like_numpy() {
        // non-zero values 1..=100 plus many zeros; numpy.percentile(1..=100, [0.5, 99.5])
        // = [1.495, 99.505]
        let mut v: Vec<f32> = (1..=100).map(|x| x as f32).collect();
        v.extend(std::iter::repeat_n(0.0, 500));
        let m = Intensity::MR_DEFAULT.resolve(&v);
        let IntensityMap::Linear { low, high } = m else {
            panic!("{m:?}")
        };
        assert!((low - 1.495).abs() < 1e-9, "{low}");
        assert!((high - 99.505).abs() < 1e-9, "{high}");
        let m = "percentile:1,99".parse::<Intensity>().unwrap().resolve(&v);
        assert_eq!(m.map(0.0), 0.0);
        assert_eq!(m.map(1000.0), 1.0);
        let mm = Intensity::MinMax.resolve(&[2.0, f32::NAN, 6.0]);
        assert_eq!(mm.map(4.0), 0.5);
    }

    #[test]
    fn strings_roundtrip_through_serde() {
        for s in [
            "lung",
            "mediastinum",
            "abdomen",
            "bone",
            "brain",
            "liver",
            "window:-100,300",
            "percentile:1,99",
            "percentile:0.5,99.5",
            "minmax",
            "none",
        ] {
            let i: Intensity = s.parse().unwrap();
            assert_eq!(i.to_string(), s);
            let json = serde_json::to_string(&i).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            let back: Intensity = serde_json::from_str(&json).unwrap();
            assert_eq!(back, i);
        }
        assert_eq!("MR".parse::<Intensity>().unwrap(), Intensity::MR_DEFAULT);
        for bad in [
            "",
            "lungs",
            "window:3",
            "window:5,1",
            "percentile:-1,50",
            "window:a,b",
        ] {
            assert!(bad.parse::<Intensity>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Intensity>("\"soft\"").is_err());
    }
}
