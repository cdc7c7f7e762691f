//! A tiny glob matcher for layer names: `*` matches any run of characters (dots included), `?`
//! exactly one character; everything else matches itself. A pattern without wildcards is an
//! exact name.

/// Whether `name` matches `pattern` as a whole.
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    // Position of the last `*` seen and the name position it currently absorbs up to.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == n[ni])) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            // Let the last `*` absorb one more character and retry.
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn literals_match_exactly() {
        assert!(matches("features.0", "features.0"));
        assert!(!matches("features.0", "features.00"));
        assert!(!matches("features.0", "features."));
        assert!(matches("", ""));
        assert!(!matches("", "a"));
    }

    #[test]
    fn star_matches_any_run_including_dots() {
        assert!(matches("*", ""));
        assert!(matches("*", "layer1.0.conv1"));
        assert!(matches("layer*.conv2", "layer1.0.conv2"));
        assert!(!matches("layer*.conv2", "layer1.0.conv1"));
        assert!(matches("*conv*", "features.conv3x3"));
        assert!(matches("a*b*c", "aXXbYYbc"));
        assert!(!matches("a*b*c", "aXXbYYb"));
        assert!(matches("**", "abc"));
    }

    #[test]
    fn question_mark_matches_one_character() {
        assert!(matches("conv?", "conv1"));
        assert!(!matches("conv?", "conv"));
        assert!(!matches("conv?", "conv12"));
        assert!(matches("conv??", "conv12"));
        assert!(matches("c?nv*", "canvas"));
        assert!(matches("é?", "éa"));
    }
}
