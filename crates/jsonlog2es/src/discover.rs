//! Finding the files an input names: globs with wildcards in the last component, optionally
//! matched in every subdirectory too, minus the `exclude` names. Directories that do not exist
//! (yet) are simply empty; they are looked at again on the next scan.

use std::path::{Path, PathBuf};

use crate::config::Input;

/// Every regular file `input` currently matches, sorted, without duplicates.
pub fn matching_files(input: &Input) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for pattern in &input.paths {
        let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name().and_then(|n| n.to_str())) else {
            continue;
        };
        let Ok(glob) = glob::Pattern::new(name) else {
            continue;
        };
        let literal = !name.contains(['*', '?', '[']);
        if literal && !input.recursive {
            if pattern.is_file() && !excluded(input, name) {
                out.push(pattern.clone());
            }
            continue;
        }
        walk(dir, &glob, input, input.recursive, &mut out);
    }
    out.sort();
    out.dedup();
    out
}

fn excluded(input: &Input, name: &str) -> bool {
    input.exclude.iter().any(|p| p.matches(name))
}

fn walk(dir: &Path, glob: &glob::Pattern, input: &Input, recursive: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if kind.is_dir() {
            // Symlinked directories are not followed (no loops).
            if recursive {
                walk(&entry.path(), glob, input, true, out);
            }
            continue;
        }
        if glob.matches(name) && !excluded(input, name) {
            let path = entry.path();
            // A symlink to a regular file counts; to anything else it does not.
            if kind.is_file() || path.is_file() {
                out.push(path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Invalid, LongLines, ReadFrom};
    use crate::index::IndexPattern;

    fn input(paths: Vec<PathBuf>, recursive: bool, exclude: &[&str]) -> Input {
        Input {
            name: "t".into(),
            paths,
            exclude: exclude.iter().map(|p| glob::Pattern::new(p).expect("glob")).collect(),
            recursive,
            read_from: ReadFrom::Beginning,
            max_line_bytes: 100,
            long_lines: LongLines::Skip,
            invalid: Invalid::Ship,
            index: IndexPattern::parse("x").expect("valid"),
            timestamp_field: "t".into(),
        }
    }

    #[test]
    fn globs_recursion_and_excludes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for f in ["a.log", "b.log", "c.txt", "old.log.gz", "sub/d.log", "sub/deeper/e.log"] {
            std::fs::create_dir_all(d.join(f).parent().expect("parent")).expect("mkdir");
            std::fs::write(d.join(f), b"x\n").expect("write");
        }
        std::fs::create_dir_all(d.join("dir.log")).expect("mkdir");
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.strip_prefix(d).expect("inside").to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names(matching_files(&input(vec![d.join("*.log")], false, &[]))),
            ["a.log", "b.log"]
        );
        assert_eq!(
            names(matching_files(&input(vec![d.join("*.log")], true, &["b.*"]))),
            ["a.log", "sub/d.log", "sub/deeper/e.log"]
        );
        assert_eq!(
            names(matching_files(&input(
                vec![d.join("c.txt"), d.join("none.txt")],
                false,
                &[]
            ))),
            ["c.txt"]
        );
        assert!(matching_files(&input(vec![d.join("missing/*.log")], false, &[])).is_empty());
    }
}
