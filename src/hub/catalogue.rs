//! The official INTR checkpoints on the Hugging Face Hub (repository `imageomics/INTR`), with what
//! the Hub's own pages say about them and what is known about their class names.

/// Where a model's class names come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassNames {
    /// Bundled with the program (`assets/classes/<file>`; the text is compiled in).
    Bundled { file: &'static str, text: &'static str },
    /// Nowhere but the dataset: the class index is the sorted order of the dataset's class folders
    /// (torchvision `ImageFolder`), so the user points at that folder or a list of names once.
    DatasetFolders,
}

/// One official checkpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    /// The short name used wherever a model path is (`--model cub`).
    pub name: &'static str,
    /// Hub repository and file at its root.
    pub repo: &'static str,
    pub file: &'static str,
    pub bytes: u64,
    /// SHA-256 of the file, lower-case hex.
    pub sha256: &'static str,
    /// Classes the official code builds for it (checked when the file is opened).
    pub classes: usize,
    /// Top-1 and top-5 accuracy (%) the Hub page reports.
    pub acc1: f32,
    pub acc5: f32,
    /// What it was trained on, and where that dataset is.
    pub dataset: &'static str,
    pub dataset_url: &'static str,
    pub names: ClassNames,
}

/// The repository of the official checkpoints.
pub const OFFICIAL_REPO: &str = "imageomics/INTR";

/// The three official checkpoints.
pub const CATALOGUE: [Entry; 3] = [
    Entry {
        name: "cub",
        repo: OFFICIAL_REPO,
        file: "intr_checkpoint_cub_detr_r50.pth",
        bytes: 495_742_628,
        sha256: "6970e7cca515193ff715e45f09ec17419e272436a736b7bb2b8eb9640fc066fa",
        classes: 200,
        acc1: 71.8,
        acc5: 89.3,
        dataset: "CUB-200-2011",
        dataset_url: "https://www.vision.caltech.edu/datasets/cub_200_2011/",
        names: ClassNames::Bundled { file: "cub-200.txt", text: include_str!("../../assets/classes/cub-200.txt") },
    },
    Entry {
        name: "birds-525",
        repo: OFFICIAL_REPO,
        file: "intr_checkpoint_bird_detr_r50.pth",
        bytes: 496_741_345,
        sha256: "10c00a8005adf7276a9a379cbe927b7249709eb88fa25a9254013f308cefc6b2",
        classes: 525,
        acc1: 97.4,
        acc5: 99.2,
        dataset: "Birds 525 species (Kaggle)",
        dataset_url: "https://www.kaggle.com/datasets/gpiosenka/100-bird-species",
        names: ClassNames::DatasetFolders,
    },
    Entry {
        name: "butterfly",
        repo: OFFICIAL_REPO,
        file: "intr_checkpoint_butterfly_detr_r50.pth",
        bytes: 495_328_225,
        sha256: "ccba7de1a8c27ae6f41be24bc76251937650a0549399f3a7b5d48952c0be7bd2",
        classes: 65,
        acc1: 95.0,
        acc5: 98.3,
        dataset: "Cambridge butterfly (train folder)",
        dataset_url: "https://huggingface.co/datasets/imageomics/Cambridge_butterfly",
        names: ClassNames::DatasetFolders,
    },
];

/// The catalogue entry called `name` (any case).
#[must_use]
pub fn find(name: &str) -> Option<&'static Entry> {
    CATALOGUE.iter().find(|e| e.name.eq_ignore_ascii_case(name))
}

/// The catalogue entry whose file is `file_name`, if any (a downloaded official checkpoint).
#[must_use]
pub fn by_file(file_name: &str) -> Option<&'static Entry> {
    CATALOGUE.iter().find(|e| e.file == file_name)
}

impl Entry {
    /// The bundled class list (one `index name` per line, as CUB's `classes.txt`), if any.
    #[must_use]
    pub fn bundled_names(&self) -> Option<&'static str> {
        match self.names {
            ClassNames::Bundled { text, .. } => Some(text),
            ClassNames::DatasetFolders => None,
        }
    }

    /// Why the classes are numbered until the user gives names, in plain words.
    #[must_use]
    pub fn names_hint(&self) -> String {
        match self.names {
            ClassNames::Bundled { .. } => format!("{}'s class names are bundled", self.dataset),
            ClassNames::DatasetFolders => format!(
                "numbered until given: no list of the {} names ships anywhere; class k is the dataset's k-th \
                 class folder in sorted order, so give its train folder (or a file of names) with --classes",
                self.classes
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_cub_names_are_its_200_classes_in_order() {
        let cub = find("CUB").unwrap();
        let names: Vec<&str> = cub.bundled_names().unwrap().lines().collect();
        assert_eq!(names.len(), cub.classes);
        assert_eq!(names[0], "1 001.Black_footed_Albatross");
        assert_eq!(names[15], "16 016.Painted_Bunting");
        assert!(find("birds-525").unwrap().bundled_names().is_none());
        assert!(CATALOGUE.iter().all(|e| e.sha256.len() == 64 && e.sha256.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
