//! Domains whose labels mix scripts: `exаmple.com` with a Cyrillic `а`
//! (U+0430) reads as `example.com` but is another domain, the mark of a
//! look-alike. Browsers show such a name in punycode; a run warns of it.
//!
//! Each label is checked on its own, punycode (`xn--…`) decoded first, with
//! the rule browsers take from UTS #39 ("highly restrictive"): a label's
//! letters are of one script, or of Latin and the scripts written together
//! in Chinese, Japanese or Korean. A label wholly in another script
//! (`пример.рф`) passes. Digits, the hyphen and combining marks belong to
//! every script.
//!
//! The table is a hand-written list of the Unicode blocks that hold the
//! letters of each script domains are written in, not the full Script
//! property: a letter of an unlisted block counts as a script of its own
//! ("another script"), so mixing it with a listed one is still seen.

use std::fmt;

/// The letters of one label of a domain that mixes scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixedScripts {
    /// The label as it reads (decoded from punycode).
    pub label: String,
    /// The scripts its letters belong to, the label's main one first.
    pub scripts: Vec<&'static str>,
    /// The letters of the label that are not of its main script.
    pub odd: Vec<char>,
}

impl fmt::Display for MixedScripts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (main, others) = self.scripts.split_first().expect("two scripts or more");
        let odd: Vec<String> = self
            .odd
            .iter()
            .take(3)
            .map(|c| format!("U+{:04X}", u32::from(*c)))
            .collect();
        write!(
            f,
            "mixes {main} with {} in {:?} ({})",
            others.join(" and "),
            self.label,
            odd.join(" ")
        )
    }
}

/// The first label of `domain` whose letters mix scripts the way look-alike
/// domains do; `None` when every label keeps to one script (or to a mix
/// that Chinese, Japanese or Korean names use).
pub fn mixed_scripts(domain: &str) -> Option<MixedScripts> {
    // The full stops IDNA separates labels with.
    let dots = ['.', '\u{3002}', '\u{ff0e}', '\u{ff61}'];
    domain.split(dots).find_map(|label| {
        let ace = label
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("xn--"));
        // A label that is no valid punycode is checked as written.
        match ace.then(|| idna::punycode::decode_to_string(&label[4..])) {
            Some(Some(decoded)) => label_mix(&decoded),
            _ => label_mix(label),
        }
    })
}

/// The scripts of one label when they mix.
fn label_mix(label: &str) -> Option<MixedScripts> {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for script in label.chars().filter_map(script_of) {
        match counts.iter_mut().find(|(s, _)| *s == script) {
            Some((_, n)) => *n += 1,
            None => counts.push((script, 1)),
        }
    }
    if counts.len() < 2 || allowed_together(&counts) {
        return None;
    }
    // The main script: Latin when the label has any (the look-alike of a
    // Latin name is the common case), else its commonest.
    counts.sort_by_key(|&(script, n)| std::cmp::Reverse((script == LATIN, n)));
    let main = counts[0].0;
    Some(MixedScripts {
        label: label.to_owned(),
        scripts: counts.iter().map(|(s, _)| *s).collect(),
        odd: label
            .chars()
            .filter(|c| script_of(*c).is_some_and(|s| s != main))
            .collect(),
    })
}

/// Whether the scripts are a mix CJK names use: Latin with Han and the
/// kana (Japanese), with Han and Bopomofo (Chinese), or with Han and Hangul
/// (Korean), in any subset.
fn allowed_together(counts: &[(&'static str, usize)]) -> bool {
    const SETS: [&[&str]; 3] = [
        &[LATIN, HAN, "Hiragana", "Katakana"],
        &[LATIN, HAN, "Bopomofo"],
        &[LATIN, HAN, "Hangul"],
    ];
    SETS.iter()
        .any(|set| counts.iter().all(|(script, _)| set.contains(script)))
}

const LATIN: &str = "Latin";
const HAN: &str = "Han";

/// The script of a letter; `None` for what every script shares (digits,
/// the hyphen, combining marks, joiners).
fn script_of(c: char) -> Option<&'static str> {
    let code = u32::from(c);
    if c.is_ascii_alphabetic() {
        return Some(LATIN);
    }
    if c.is_ascii() || COMMON.iter().any(|&(lo, hi)| (lo..=hi).contains(&code)) {
        return None;
    }
    let found = SCRIPTS
        .iter()
        .find(|&&(lo, hi, _)| (lo..=hi).contains(&code))
        .map(|&(_, _, script)| script);
    Some(found.unwrap_or("another script"))
}

/// Shared by every script: combining marks, joiners, variation selectors,
/// the middle dot of Catalan `l·l`, and Unicode's punctuation and symbols.
const COMMON: &[(u32, u32)] = &[
    (0x00A0, 0x00BF),
    (0x00D7, 0x00D7),
    (0x00F7, 0x00F7),
    (0x02B0, 0x036F),
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x2000, 0x2BFF),
    (0x3000, 0x3004),
    (0x3008, 0x303F),
    (0x3099, 0x309C),
    (0x30FB, 0x30FC),
    (0xFE00, 0xFE0F),
    (0xFE20, 0xFE2F),
    (0xFF01, 0xFF20),
];

/// The blocks of the letters of each script, by code point.
const SCRIPTS: &[(u32, u32, &str)] = &[
    (0x00C0, 0x024F, LATIN),
    (0x0250, 0x02AF, LATIN),
    (0x0370, 0x03FF, "Greek"),
    (0x0400, 0x052F, "Cyrillic"),
    (0x0530, 0x058F, "Armenian"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0600, 0x06FF, "Arabic"),
    (0x0700, 0x074F, "Syriac"),
    (0x0750, 0x077F, "Arabic"),
    (0x0780, 0x07BF, "Thaana"),
    (0x07C0, 0x07FF, "N'Ko"),
    (0x08A0, 0x08FF, "Arabic"),
    (0x0900, 0x097F, "Devanagari"),
    (0x0980, 0x09FF, "Bengali"),
    (0x0A00, 0x0A7F, "Gurmukhi"),
    (0x0A80, 0x0AFF, "Gujarati"),
    (0x0B00, 0x0B7F, "Oriya"),
    (0x0B80, 0x0BFF, "Tamil"),
    (0x0C00, 0x0C7F, "Telugu"),
    (0x0C80, 0x0CFF, "Kannada"),
    (0x0D00, 0x0D7F, "Malayalam"),
    (0x0D80, 0x0DFF, "Sinhala"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x0E80, 0x0EFF, "Lao"),
    (0x0F00, 0x0FFF, "Tibetan"),
    (0x1000, 0x109F, "Myanmar"),
    (0x10A0, 0x10FF, "Georgian"),
    (0x1100, 0x11FF, "Hangul"),
    (0x1200, 0x139F, "Ethiopic"),
    (0x13A0, 0x13FF, "Cherokee"),
    (0x1780, 0x17FF, "Khmer"),
    (0x1800, 0x18AF, "Mongolian"),
    (0x1C80, 0x1C8F, "Cyrillic"),
    (0x1C90, 0x1CBF, "Georgian"),
    (0x1D00, 0x1D7F, LATIN),
    (0x1E00, 0x1EFF, LATIN),
    (0x1F00, 0x1FFF, "Greek"),
    (0x2C60, 0x2C7F, LATIN),
    (0x2D00, 0x2D2F, "Georgian"),
    (0x2DE0, 0x2DFF, "Cyrillic"),
    (0x2E80, 0x2FDF, HAN),
    (0x3005, 0x3007, HAN),
    (0x3040, 0x309F, "Hiragana"),
    (0x30A0, 0x30FF, "Katakana"),
    (0x3100, 0x312F, "Bopomofo"),
    (0x3130, 0x318F, "Hangul"),
    (0x31A0, 0x31BF, "Bopomofo"),
    (0x31F0, 0x31FF, "Katakana"),
    (0x3400, 0x4DBF, HAN),
    (0x4E00, 0x9FFF, HAN),
    (0xA640, 0xA69F, "Cyrillic"),
    (0xA720, 0xA7FF, LATIN),
    (0xA960, 0xA97F, "Hangul"),
    (0xAB30, 0xAB6F, LATIN),
    (0xAB70, 0xABBF, "Cherokee"),
    (0xAC00, 0xD7FF, "Hangul"),
    (0xF900, 0xFAFF, HAN),
    (0xFB1D, 0xFB4F, "Hebrew"),
    (0xFB50, 0xFDFF, "Arabic"),
    (0xFE70, 0xFEFF, "Arabic"),
    (0xFF21, 0xFF5A, LATIN),
    (0xFF66, 0xFF9F, "Katakana"),
    (0x20000, 0x323AF, HAN),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(domain: &str) -> Option<String> {
        mixed_scripts(domain).map(|m| m.to_string())
    }

    #[test]
    fn latin_with_a_cyrillic_or_greek_letter_is_mixed_written_either_way() {
        assert_eq!(
            mix("ex\u{430}mple.com").as_deref(),
            Some("mixes Latin with Cyrillic in \"ex\u{430}mple\" (U+0430)")
        );
        assert_eq!(mix("xn--exmple-4nf.com"), mix("ex\u{430}mple.com"));
        assert_eq!(
            mix("mail.p\u{3b1}ypal.com").as_deref(),
            Some("mixes Latin with Greek in \"p\u{3b1}ypal\" (U+03B1)")
        );
        assert!(mix("EX\u{410}MPLE.COM").is_some(), "capitals");
        assert!(mix("XN--EXMPLE-4NF.COM").is_some(), "punycode in capitals");
        // Mostly Cyrillic with one Latin letter: Latin still comes first.
        let m = mixed_scripts("\u{43f}p\u{438}\u{43c}\u{435}\u{440}.ru").unwrap();
        assert_eq!(m.scripts, ["Latin", "Cyrillic"]);
        assert_eq!(m.odd.len(), 5);
    }

    #[test]
    fn one_script_per_label_and_cjk_mixes_are_not() {
        for domain in [
            "example.com",
            "\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.\u{440}\u{444}",
            "xn--e1afmkfd.xn--p1ai",
            "m\u{fc}nchen.de",
            "caf\u{e9}-2.fr",
            "\u{3b5}\u{3bb}\u{3bb}\u{3ac}\u{3b4}\u{3b1}.gr",
            // A Cyrillic label beside a Latin one: each label keeps to one.
            "\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.com",
            // Japanese: Han, Hiragana, Katakana and Latin together.
            "\u{65e5}\u{672c}\u{3054}\u{30ab}abc.jp",
            // Korean: Hangul and Han; Chinese with Latin.
            "\u{d55c}\u{5b57}.kr",
            "abc\u{4e2d}\u{6587}.cn",
        ] {
            assert_eq!(mix(domain), None, "{domain}");
        }
    }

    #[test]
    fn other_scripts_mixed_with_one_another_are_mixed() {
        assert!(mix("\u{43f}\u{3b1}.com").is_some(), "Cyrillic with Greek");
        assert!(mix("\u{5d0}a.com").is_some(), "Hebrew with Latin");
        assert!(mix("\u{d55c}\u{3042}.kr").is_some(), "Hangul with Hiragana");
        // A letter of a block the table does not list still counts.
        assert!(mix("a\u{a500}.com").is_some(), "Vai with Latin");
    }
}
