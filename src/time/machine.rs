//! The CPU a table was measured on against the CPU converting: a table describes one machine,
//! and on a CPU of another kind the modeled speed-ups can miss (BENCHMARKS.md: the shipped
//! table's met targets ran 0.91–1.06 of the claim on the AMD EPYC it was measured on, 0.71–1.01
//! on an Intel Xeon, and 0.81–1.00 on a Zen 5 EPYC where its milliseconds were about 1.7x too
//! slow).

use super::TimeModel;

/// A CPU as the time tables name it: its model name (`"AMD EPYC 9B14"`; `None` where it cannot
/// be read), its widest vector instruction set (`"avx512"`, `"avx2"`, or another
/// architecture's name) and its family number (one CPU generation or a few: AMD's 25 is Zen 3
/// and 4, 26 Zen 5; a virtual machine often hides the model name's details, not the family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    /// The model name (on x86-64, the CPUID brand string, which `lscpu` shows as "Model name").
    pub name: Option<String>,
    /// `"avx512"` (AVX-512F), `"avx2"`, `"x86_64"` (neither), else the architecture.
    pub isa: String,
    /// The CPUID family number (base family, plus the extended family where the base is 15),
    /// `None` off x86-64.
    pub family: Option<u32>,
}

impl Cpu {
    /// The CPU this process runs on.
    pub fn this() -> Self {
        Self { name: brand(), isa: isa().to_string(), family: family() }
    }
}

impl std::fmt::Display for Cpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}", self.name.as_deref().unwrap_or("an unknown CPU"), self.isa)?;
        match self.family {
            Some(n) => write!(f, ", family {n})"),
            None => f.write_str(")"),
        }
    }
}

impl TimeModel {
    /// The CPU the table says it was measured on (`"cpu"`, `"isa"` and `"cpu_family"`), when
    /// it says.
    pub fn cpu(&self) -> Option<Cpu> {
        let isa = self.isa.clone()?;
        Some(Cpu { name: self.cpu.clone(), isa, family: self.cpu_family })
    }

    /// `Some("measured on AMD EPYC (avx512, family 25); this CPU is ...")` when `cpu` is not of the kind
    /// the table was measured on: its model name does not contain the table's (`"AMD EPYC"`
    /// names a family), its instruction set differs, or the table names a CPU family number and
    /// `cpu`'s is another. `None` when they match or the table does not name its CPU.
    pub fn unlike(&self, cpu: &Cpu) -> Option<String> {
        let table = self.cpu()?;
        let words = |s: &str| s.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>().join(" ");
        let same_name = match (&table.name, &cpu.name) {
            (Some(t), Some(c)) => words(c).contains(&words(t)),
            (None, _) => true,
            (Some(_), None) => false,
        };
        let same_family = table.family.is_none_or(|f| cpu.family == Some(f));
        (!same_name || table.isa != cpu.isa || !same_family).then(|| format!("measured on {table}; this CPU is {cpu}"))
    }
}

#[cfg(target_arch = "x86_64")]
fn isa() -> &'static str {
    if std::arch::is_x86_feature_detected!("avx512f") {
        "avx512"
    } else if std::arch::is_x86_feature_detected!("avx2") {
        "avx2"
    } else {
        "x86_64"
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn isa() -> &'static str {
    std::env::consts::ARCH
}

/// The CPUID brand string (leaves 0x80000002–4), trimmed.
#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)]
fn brand() -> Option<String> {
    use std::arch::x86_64::__cpuid;
    // SAFETY: every x86-64 CPU has the CPUID instruction; leaf 0x80000000 gives the highest
    // extended leaf, checked before the brand leaves are read.
    let max = unsafe { __cpuid(0x8000_0000) }.eax;
    if max < 0x8000_0004 {
        return None;
    }
    let mut bytes = Vec::with_capacity(48);
    for leaf in 0x8000_0002u32..=0x8000_0004 {
        // SAFETY: as above; the leaf exists (checked against `max`).
        let r = unsafe { __cpuid(leaf) };
        for word in [r.eax, r.ebx, r.ecx, r.edx] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
    }
    let name = String::from_utf8_lossy(&bytes).trim_matches(char::from(0)).trim().to_string();
    (!name.is_empty()).then_some(name)
}

#[cfg(not(target_arch = "x86_64"))]
fn brand() -> Option<String> {
    None
}

/// The family number of CPUID leaf 1: bits 8–11, plus bits 20–27 where those are 15.
#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)]
fn family() -> Option<u32> {
    use std::arch::x86_64::__cpuid;
    // SAFETY: every x86-64 CPU has the CPUID instruction and its leaf 1.
    let eax = unsafe { __cpuid(1) }.eax;
    let base = (eax >> 8) & 0xF;
    Some(if base == 0xF { base + ((eax >> 20) & 0xFF) } else { base })
}

#[cfg(not(target_arch = "x86_64"))]
fn family() -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(name: Option<&str>, isa: &str) -> Cpu {
        Cpu { name: name.map(str::to_string), isa: isa.to_string(), family: None }
    }

    fn of_family(name: &str, family: u32) -> Cpu {
        Cpu { family: Some(family), ..cpu(Some(name), "avx512") }
    }

    #[test]
    fn the_shipped_table_names_its_cpu_and_knows_its_own_kind() {
        let t = TimeModel::onnxruntime_x86_64();
        assert_eq!(t.cpu(), Some(of_family("AMD EPYC", 25)));
        assert_eq!(t.unlike(&of_family("AMD EPYC 9B14 96-Core Processor", 25)), None);
        assert_eq!(t.unlike(&of_family("amd  epyc 9654", 25)), None);
    }

    #[test]
    fn another_vendor_or_instruction_set_is_named() {
        let t = TimeModel::onnxruntime_x86_64();
        let intel = t.unlike(&cpu(Some("Intel(R) Xeon(R) Processor"), "avx512")).unwrap();
        assert_eq!(intel, "measured on AMD EPYC (avx512, family 25); this CPU is Intel(R) Xeon(R) Processor (avx512)");
        let avx2 = t.unlike(&cpu(Some("AMD EPYC 7B13"), "avx2")).unwrap();
        assert!(avx2.ends_with("this CPU is AMD EPYC 7B13 (avx2)"), "{avx2}");
        let unknown = t.unlike(&cpu(None, "aarch64")).unwrap();
        assert!(unknown.ends_with("this CPU is an unknown CPU (aarch64)"), "{unknown}");
    }

    #[test]
    fn the_table_of_this_kind_of_cpu_is_chosen_else_the_reference() {
        let reference = TimeModel::onnxruntime_x86_64();
        let chosen = |name: Option<&str>, isa: &str| TimeModel::shipped_for(&cpu(name, isa), 1).unwrap();
        let xeon = chosen(Some("Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"), "avx512");
        assert_eq!(xeon.cpu(), Some(cpu(Some("Intel(R) Xeon(R)"), "avx512")));
        assert_ne!(xeon, reference);
        assert_eq!(TimeModel::shipped_for(&of_family("AMD EPYC 9B14 96-Core Processor", 25), 1).unwrap(), reference);
        // No table of this kind: the reference (and the CLI's note says so).
        for (name, isa) in
            [(Some("Intel(R) Xeon(R) CPU @ 2.20GHz"), "avx2"), (Some("AMD EPYC 7B13"), "avx2"), (None, "aarch64")]
        {
            assert_eq!(chosen(name, isa), reference, "{name:?} {isa}");
        }
        assert_eq!(TimeModel::shipped_for(&cpu(None, "avx512"), 2).unwrap().threads(), 2);
        assert!(TimeModel::shipped_for(&cpu(None, "avx512"), 0).is_err());
    }

    #[test]
    fn a_table_naming_its_family_matches_only_that_family() {
        let text = include_str!("onnxruntime-x86_64.json").replacen("\"cpu_family\": 25", "\"cpu_family\": 26", 1);
        let zen5 = TimeModel::from_json("zen5", &text, 1).unwrap();
        assert_eq!(zen5.cpu(), Some(of_family("AMD EPYC", 26)));
        assert_eq!(zen5.unlike(&of_family("AMD EPYC 9B45", 26)), None);
        let note = zen5.unlike(&of_family("AMD EPYC", 25)).unwrap();
        assert_eq!(note, "measured on AMD EPYC (avx512, family 26); this CPU is AMD EPYC (avx512, family 25)");
        assert!(zen5.unlike(&cpu(Some("AMD EPYC"), "avx512")).is_some(), "an unknown family is another");
        assert!(zen5.describe().contains("(AMD EPYC, avx512, family 26), 1 thread"), "{}", zen5.describe());
        // The reference table was measured on a Zen 4 (family 25); a Zen 5 (family 26) has a
        // 1-thread table of its own, and with 2 threads the reference's, with the note.
        let reference = TimeModel::onnxruntime_x86_64();
        assert_eq!(reference.unlike(&of_family("AMD EPYC 9B14", 25)), None);
        assert!(reference.unlike(&of_family("AMD EPYC", 26)).unwrap().contains("(avx512, family 25); this CPU"));
        let shipped = TimeModel::shipped_for(&of_family("AMD EPYC 9B45 128-Core Processor", 26), 1).unwrap();
        assert_eq!(shipped.cpu(), Some(of_family("AMD EPYC", 26)));
        assert_ne!(shipped, reference);
        let two = TimeModel::shipped_for(&of_family("AMD EPYC", 26), 2).unwrap();
        assert_eq!((two.cpu(), two.threads()), (Some(of_family("AMD EPYC", 25)), 2));
        assert!(two.unlike(&of_family("AMD EPYC", 26)).is_some());
    }

    /// The Zen 5 table is the reference's 1-thread table times one factor (bench/rescale_table.py
    /// without --per-entry): the same entries, every coefficient the reference's times the factor
    /// it records, plus the large-tensor term on its depthwise and Concat entries
    /// (bench/fit_tensor_term.py), so its plans are the reference's where no tensor is large.
    /// The exception is the depthwise entries: the reference's were measured again over a wider
    /// grid with a `channel_rows` term (bench/calibrate_depthwise.py) after the Zen 5 table was
    /// derived, which keeps the reference's earlier four-feature depthwise fits (not re-measured
    /// on a Zen 5), and the reference's `conv_grouped_blocks` entries, which the Zen 5 table
    /// does not have (its grouped convolutions of whole blocks take the `dense` entry).
    #[test]
    fn the_zen5_table_is_the_reference_times_one_factor_plus_the_tensor_term() {
        let parse = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        let (zen5, reference) =
            (parse(include_str!("onnxruntime-x86_64-amd-zen5.json")), parse(include_str!("onnxruntime-x86_64.json")));
        let one_thread = |t: &serde_json::Value| {
            let tables = t["tables"].as_array().unwrap();
            tables.iter().find(|t| t["threads"] == 1).unwrap()["entries"].as_array().unwrap().clone()
        };
        let (z, mut r) = (one_thread(&zen5), one_thread(&reference));
        // Entries the reference gained after the Zen 5 table was derived (bench/calibrate_grouped.py).
        r.retain(|e| e["op"] != "conv_grouped_blocks");
        assert_eq!(z.len(), r.len());
        let factor = z[0]["factor"].as_f64().unwrap();
        assert!((0.5..0.8).contains(&factor), "{factor}");
        let term = zen5["tensor_term"]["coef_ns_per_element"].as_f64().unwrap();
        let list = |e: &serde_json::Value, key: &str| e[key].as_array().unwrap().clone();
        let mut with_term = 0;
        for (a, b) in z.iter().zip(&r) {
            for key in ["op", "class", "aligned"] {
                assert_eq!(a[key], b[key], "{key} of {a}");
            }
            assert_eq!(a["factor"].as_f64(), Some(factor), "{a}");
            let (mut features, mut coef) = (list(a, "features"), list(a, "coef"));
            // The depthwise and Concat entries end with the large-tensor term (bench/fit_tensor_term.py).
            if a["class"] == "depthwise" || a["op"] == "concat" {
                assert_eq!(features.pop().unwrap(), "tensor_elems_over_cache", "{a}");
                assert_eq!(coef.pop().unwrap().as_f64(), Some(term), "{a}");
                with_term += 1;
            }
            if a["class"] == "depthwise" {
                assert_eq!(features, ["one", "macs_padded", "in_elems", "out_elems"], "{a}");
                assert_eq!(list(b, "features").last().unwrap(), "channel_rows", "{b}");
                continue;
            }
            assert_eq!(features, list(b, "features"), "{a}");
            for (x, y) in coef.iter().zip(list(b, "coef")) {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                assert!((x - y * factor).abs() <= 1e-5 * (y * factor).abs(), "{x} vs {y} x {factor} in {a}");
            }
        }
        assert_eq!(with_term, 4, "depthwise aligned and not, Concat aligned and not");
        assert!((0.1..2.0).contains(&term), "{term}");
        assert_eq!(zen5["cpu_family"], 26);
        assert_eq!(zen5["tables"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_family_that_is_not_a_number_is_an_error() {
        let text = include_str!("onnxruntime-x86_64.json").replacen("\"cpu_family\": 25", "\"cpu_family\": \"zen\"", 1);
        let e = TimeModel::from_json("t", &text, 1).unwrap_err().to_string();
        assert!(e.contains("cpu_family") && e.contains("zen"), "{e}");
    }

    #[test]
    fn a_table_without_its_cpu_compares_nothing() {
        let text = include_str!("onnxruntime-x86_64.json").replacen("\"cpu\": \"AMD EPYC\",", "", 1);
        let text = text.replacen("\"cpu_family\": 25,", "", 1);
        let t = TimeModel::from_json("t", &text, 1).unwrap();
        assert_eq!(t.unlike(&cpu(Some("Intel(R) Xeon(R) Processor"), "avx512")), None);
        let text = text.replacen("\"isa\": \"avx512\",", "", 1);
        let t = TimeModel::from_json("t", &text, 1).unwrap();
        assert_eq!(t.cpu(), None);
        assert_eq!(t.unlike(&cpu(Some("Intel(R) Xeon(R) Processor"), "avx2")), None);
    }

    #[test]
    fn this_cpu_is_readable() {
        let c = Cpu::this();
        assert!(!c.isa.is_empty());
        #[cfg(target_arch = "x86_64")]
        assert!(c.name.as_deref().is_some_and(|n| !n.is_empty() && !n.contains('\0')), "{c:?}");
        // The family CPUID gives is the one Linux reports.
        let proc = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let linux = proc
            .lines()
            .find_map(|l| l.strip_prefix("cpu family"))
            .and_then(|v| v.trim_start_matches([' ', '\t', ':']).trim().parse().ok());
        if let Some(linux) = linux {
            assert_eq!(c.family, Some(linux), "{c:?}");
        }
    }
}
