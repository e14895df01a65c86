//! The species of the synthetic bird dataset and the body parts they are made of.
//!
//! Sixteen species: every combination of four binary traits, each trait living on exactly one body
//! part (crown colour on the crown, wing bars on the wing, a tail band on the tail, breast pattern
//! on the breast). Two species that differ in one trait differ in one part only, which is what lets an
//! evaluation check whether a classifier looks at the right place.

use serde::{Deserialize, Serialize};

/// A body part, with the label it has in the per-pixel masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Part {
    Background = 0,
    Body = 1,
    Tail = 2,
    Wing = 3,
    Breast = 4,
    Head = 5,
    Crown = 6,
    Beak = 7,
    Eye = 8,
}

impl Part {
    /// Every part, in label order.
    pub const ALL: [Part; 9] = [
        Part::Background,
        Part::Body,
        Part::Tail,
        Part::Wing,
        Part::Breast,
        Part::Head,
        Part::Crown,
        Part::Beak,
        Part::Eye,
    ];

    /// The mask label of this part.
    #[must_use]
    pub fn label(self) -> u8 {
        self as u8
    }

    /// The part of a mask label, if it is one.
    #[must_use]
    pub fn from_label(label: u8) -> Option<Part> {
        Part::ALL.get(usize::from(label)).copied()
    }

    /// Lower-case English name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Part::Background => "background",
            Part::Body => "body",
            Part::Tail => "tail",
            Part::Wing => "wing",
            Part::Breast => "breast",
            Part::Head => "head",
            Part::Crown => "crown",
            Part::Beak => "beak",
            Part::Eye => "eye",
        }
    }
}

/// One of the four binary traits that tell the species apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Trait {
    /// Scarlet (false) or azure (true) crown.
    CrownColour,
    /// Plain wing (false) or two white wing bars (true).
    WingBars,
    /// Plain (false) or white-banded (true) tail; the tail's shape varies from bird to bird.
    TailBand,
    /// Plain (false) or spotted (true) breast.
    BreastPattern,
}

impl Trait {
    /// Every trait.
    pub const ALL: [Trait; 4] = [Trait::CrownColour, Trait::WingBars, Trait::TailBand, Trait::BreastPattern];

    /// The part the trait is drawn on.
    #[must_use]
    pub fn part(self) -> Part {
        match self {
            Trait::CrownColour => Part::Crown,
            Trait::WingBars => Part::Wing,
            Trait::TailBand => Part::Tail,
            Trait::BreastPattern => Part::Breast,
        }
    }

    /// Short name of the trait.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Trait::CrownColour => "crown colour",
            Trait::WingBars => "wing bars",
            Trait::TailBand => "tail band",
            Trait::BreastPattern => "breast pattern",
        }
    }

    /// Names of the two values, for `false` and for `true`.
    #[must_use]
    pub fn values(self) -> [&'static str; 2] {
        match self {
            Trait::CrownColour => ["scarlet", "azure"],
            Trait::WingBars => ["none", "two white bars"],
            Trait::TailBand => ["plain", "white band"],
            Trait::BreastPattern => ["plain", "spotted"],
        }
    }
}

/// One species: an index (its class label) and the value of each trait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Species {
    pub index: usize,
    pub name: String,
    pub crown_blue: bool,
    pub wing_bars: bool,
    pub tail_banded: bool,
    pub breast_spotted: bool,
}

impl Species {
    /// The species with `index` in `0..16`: bit 0 banded tail, bit 1 wing bars, bit 2 azure crown,
    /// bit 3 spotted breast.
    #[must_use]
    pub fn from_index(index: usize) -> Species {
        let tail_banded = index & 1 != 0;
        let wing_bars = index & 2 != 0;
        let crown_blue = index & 4 != 0;
        let breast_spotted = index & 8 != 0;
        let name = format!(
            "{}{}-capped {} {}",
            if breast_spotted { "Speckled " } else { "" },
            if crown_blue { "Azure" } else { "Scarlet" },
            if wing_bars { "Barwing" } else { "Plainwing" },
            if tail_banded { "Bandtail" } else { "Plaintail" },
        );
        Species { index, name, crown_blue, wing_bars, tail_banded, breast_spotted }
    }

    /// The value of one trait.
    #[must_use]
    pub fn has(&self, t: Trait) -> bool {
        match t {
            Trait::CrownColour => self.crown_blue,
            Trait::WingBars => self.wing_bars,
            Trait::TailBand => self.tail_banded,
            Trait::BreastPattern => self.breast_spotted,
        }
    }

    /// Directory name of the class: zero-padded index, `_`, the name with spaces as underscores.
    #[must_use]
    pub fn dir_name(&self) -> String {
        format!("{:02}_{}", self.index, self.name.replace(' ', "_"))
    }
}

/// Number of species.
pub const SPECIES_COUNT: usize = 16;

/// All sixteen species, in index order.
#[must_use]
pub fn all_species() -> Vec<Species> {
    (0..SPECIES_COUNT).map(Species::from_index).collect()
}

/// The part two species differ in, when they differ in exactly one trait.
#[must_use]
pub fn differing_part(a: &Species, b: &Species) -> Option<Part> {
    let mut differing = Trait::ALL.iter().filter(|&&t| a.has(t) != b.has(t));
    match (differing.next(), differing.next()) {
        (Some(t), None) => Some(t.part()),
        _ => None,
    }
}

/// Every pair `(i, j, part)` with `i < j` of species that differ in one part only (32 pairs).
#[must_use]
pub fn one_part_pairs() -> Vec<(usize, usize, Part)> {
    let species = all_species();
    let mut pairs = Vec::new();
    for (i, a) in species.iter().enumerate() {
        for (j, b) in species.iter().enumerate().skip(i + 1) {
            if let Some(part) = differing_part(a, b) {
                pairs.push((i, j, part));
            }
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_ascii_and_indexed() {
        let species = all_species();
        assert_eq!(species.len(), 16);
        let names: HashSet<_> = species.iter().map(|s| s.name.clone()).collect();
        assert_eq!(names.len(), 16);
        for (i, s) in species.iter().enumerate() {
            assert_eq!(s.index, i);
            assert!(s.name.is_ascii());
        }
        assert_eq!(species[3].dir_name(), "03_Scarlet-capped_Barwing_Bandtail");
        assert_eq!(species[8].name, "Speckled Scarlet-capped Plainwing Plaintail");
    }

    #[test]
    fn thirty_two_one_part_pairs() {
        let pairs = one_part_pairs();
        assert_eq!(pairs.len(), 32);
        for &(i, j, part) in &pairs {
            assert!(i < j);
            assert!(matches!(part, Part::Crown | Part::Wing | Part::Tail | Part::Breast));
        }
        for part in [Part::Crown, Part::Wing, Part::Tail, Part::Breast] {
            assert_eq!(pairs.iter().filter(|p| p.2 == part).count(), 8);
        }
        let s = all_species();
        assert_eq!(differing_part(&s[0], &s[0]), None);
        assert_eq!(differing_part(&s[0], &s[3]), None);
        assert_eq!(differing_part(&s[0], &s[1]), Some(Part::Tail));
    }

    #[test]
    fn part_labels_round_trip() {
        for (i, p) in Part::ALL.iter().enumerate() {
            assert_eq!(usize::from(p.label()), i);
            assert_eq!(Part::from_label(p.label()), Some(*p));
        }
        assert_eq!(Part::from_label(9), None);
    }
}
