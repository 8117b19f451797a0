//! Texts read one line at a time from a file or stdin, so a bulk run holds only the texts
//! it is working on.

use model_manager::ModelError;
use std::io::{BufRead, BufReader};
use std::path::Path;

fn io_error(what: String, e: std::io::Error) -> ModelError {
    ModelError::invalid_input(format!("{what}: {e}")).caused_by("IoError", e)
}

/// How lines become texts, decided by the first non-blank line.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    /// Each line is a text.
    Lines,
    /// Each line is a JSON object with a string `text`.
    Jsonl,
}

/// The texts of one input, in order: JSONL when the first non-blank line is an object with
/// a string `text` (then every line must be), else one text per line. Blank lines are
/// skipped.
pub struct TextSource {
    reader: Box<dyn BufRead + Send>,
    name: String,
    format: Option<Format>,
    line: usize,
    /// Texts given on the command line, served first.
    given: std::vec::IntoIter<String>,
}

impl TextSource {
    /// The texts of `path` (`-` is stdin) after `given`.
    pub fn open(given: Vec<String>, path: Option<&Path>) -> Result<Self, ModelError> {
        let (reader, name): (Box<dyn BufRead + Send>, String) = match path {
            None => (Box::new(std::io::empty()), String::new()),
            Some(p) if p == Path::new("-") => {
                (Box::new(BufReader::new(std::io::stdin())), "stdin".into())
            }
            Some(p) => {
                let file = std::fs::File::open(p)
                    .map_err(|e| io_error(format!("cannot read texts from {}", p.display()), e))?;
                (Box::new(BufReader::new(file)), p.display().to_string())
            }
        };
        Ok(Self {
            reader,
            name,
            format: None,
            line: 0,
            given: given.into_iter(),
        })
    }

    /// Up to `count` more texts; empty at the end.
    pub fn next_texts(&mut self, count: usize) -> Result<Vec<String>, ModelError> {
        let mut texts = Vec::with_capacity(count.min(4096));
        while texts.len() < count {
            match self.next_text()? {
                Some(text) => texts.push(text),
                None => break,
            }
        }
        Ok(texts)
    }

    fn next_text(&mut self) -> Result<Option<String>, ModelError> {
        if let Some(text) = self.given.next() {
            return Ok(Some(text));
        }
        let mut raw = String::new();
        loop {
            raw.clear();
            let read = self
                .reader
                .read_line(&mut raw)
                .map_err(|e| io_error(format!("cannot read texts from {}", self.name), e))?;
            if read == 0 {
                return Ok(None);
            }
            self.line += 1;
            let line = raw.trim_end_matches(['\n', '\r']);
            if line.trim().is_empty() {
                continue;
            }
            return self.text_of(line).map(Some);
        }
    }

    fn text_of(&mut self, line: &str) -> Result<String, ModelError> {
        let json_text = || -> Option<String> {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            value.get("text")?.as_str().map(str::to_owned)
        };
        let format = *self.format.get_or_insert_with(|| match json_text() {
            Some(_) => Format::Jsonl,
            None => Format::Lines,
        });
        match format {
            Format::Lines => Ok(line.to_owned()),
            Format::Jsonl => json_text().ok_or_else(|| {
                ModelError::invalid_input(format!(
                    "{} line {}: expected a JSON object with a string `text`, as on the first line",
                    self.name, self.line
                ))
                .with("line", self.line)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str) -> TextSource {
        TextSource {
            reader: Box::new(std::io::Cursor::new(text.to_owned().into_bytes())),
            name: "input".into(),
            format: None,
            line: 0,
            given: Vec::new().into_iter(),
        }
    }

    #[test]
    fn lines_and_jsonl_are_told_apart_by_the_first_line() {
        let mut lines = source("a\n\n{\"text\": \"b\"}\nc\n");
        assert_eq!(
            lines.next_texts(10).unwrap(),
            ["a", "{\"text\": \"b\"}", "c"]
        );
        let mut jsonl = source("{\"text\": \"a\", \"id\": 1}\r\n{\"text\": \"b\"}\n");
        assert_eq!(jsonl.next_texts(1).unwrap(), ["a"]);
        assert_eq!(jsonl.next_texts(10).unwrap(), ["b"]);
        assert!(jsonl.next_texts(10).unwrap().is_empty());
    }

    #[test]
    fn a_plain_line_in_jsonl_names_its_line() {
        let mut jsonl = source("{\"text\": \"a\"}\n\nplain\n");
        let err = jsonl.next_texts(10).unwrap_err();
        assert!(err.message.contains("line 3"), "{}", err.message);
    }
}
