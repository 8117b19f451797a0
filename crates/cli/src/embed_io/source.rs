//! Texts read one line at a time from a file or stdin, so a bulk run holds only the texts
//! it is working on. The format is declared or detected, never guessed line by line: in
//! `auto`, the first non-blank line decides and every other line must agree.

use crate::args::InputFormat;
use model_manager::ModelError;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;

fn io_error(what: String, e: std::io::Error) -> ModelError {
    ModelError::invalid_input(format!("{what}: {e}")).caused_by("IoError", e)
}

/// One text and where it came from: its line in the input file (1-based), or `None` for
/// a text given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct InputText {
    /// The line number in the input, if from a file.
    pub line: Option<usize>,
    /// The text.
    pub text: String,
}

/// The texts of one input, in order. Plain text: each line is a text, a blank line an
/// empty text (kept, so positions match lines). JSONL: each line an object with a string
/// in the field; a blank or other line is an `INVALID_INPUT` naming it.
pub struct TextSource {
    reader: Box<dyn BufRead + Send>,
    name: String,
    format: InputFormat,
    /// The line that decided an `auto` format.
    detected_at: Option<usize>,
    field: String,
    line: usize,
    /// Texts ready to hand out: the command line's, then blank lines held while `auto`
    /// had not decided.
    ready: VecDeque<InputText>,
}

fn json_object(line: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_str(line).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
}

impl TextSource {
    /// The texts of `path` (`-` is stdin) after `given`, read as `format`.
    pub fn open(
        given: Vec<String>,
        path: Option<&Path>,
        format: InputFormat,
        field: &str,
    ) -> Result<Self, ModelError> {
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
        Ok(Self::from_reader(reader, name, given, format, field))
    }

    /// Texts already read (with their lines), served as they are.
    pub fn from_texts(texts: Vec<InputText>) -> Self {
        let mut source = Self::from_reader(
            Box::new(std::io::empty()),
            String::new(),
            Vec::new(),
            InputFormat::Text,
            "text",
        );
        source.ready = texts.into();
        source
    }

    fn from_reader(
        reader: Box<dyn BufRead + Send>,
        name: String,
        given: Vec<String>,
        format: InputFormat,
        field: &str,
    ) -> Self {
        Self {
            reader,
            name,
            format,
            detected_at: None,
            field: field.to_owned(),
            line: 0,
            ready: given
                .into_iter()
                .map(|text| InputText { line: None, text })
                .collect(),
        }
    }

    /// Up to `count` more texts; empty at the end.
    pub fn next_texts(&mut self, count: usize) -> Result<Vec<InputText>, ModelError> {
        let mut texts = Vec::with_capacity(count.min(4096));
        while texts.len() < count {
            match self.next_text()? {
                Some(text) => texts.push(text),
                None => break,
            }
        }
        Ok(texts)
    }

    fn next_text(&mut self) -> Result<Option<InputText>, ModelError> {
        let mut raw = String::new();
        loop {
            if self.format != InputFormat::Auto {
                if let Some(text) = self.ready.pop_front() {
                    return Ok(Some(text));
                }
            } else if self.ready.front().is_some_and(|t| t.line.is_none()) {
                return Ok(self.ready.pop_front());
            }
            raw.clear();
            let read = self
                .reader
                .read_line(&mut raw)
                .map_err(|e| io_error(format!("cannot read texts from {}", self.name), e))?;
            if read == 0 {
                // Only blank lines: plain text.
                if self.format == InputFormat::Auto && !self.ready.is_empty() {
                    self.format = InputFormat::Text;
                    continue;
                }
                return Ok(None);
            }
            self.line += 1;
            let line = raw.trim_end_matches(['\n', '\r']).to_owned();
            if let Some(text) = self.text_of(&line)? {
                self.ready.push_back(text);
            }
        }
    }

    /// The text of one line; `None` for a blank line held back while `auto` decides.
    fn text_of(&mut self, line: &str) -> Result<Option<InputText>, ModelError> {
        let at = self.line;
        let blank = line.trim().is_empty();
        if self.format == InputFormat::Auto {
            if blank {
                self.ready.push_back(InputText {
                    line: Some(at),
                    text: String::new(),
                });
                return Ok(None);
            }
            self.format = match json_object(line) {
                Some(_) => InputFormat::Jsonl,
                None => InputFormat::Text,
            };
            self.detected_at = Some(at);
            let held = self.ready.iter().find_map(|t| t.line);
            if let (InputFormat::Jsonl, Some(first)) = (self.format, held) {
                return Err(
                    self.bad_line(first, "is blank, in a JSONL input (one object per line)")
                );
            }
        }
        match self.format {
            InputFormat::Text => {
                if self.detected_at.is_some() && json_object(line).is_some() {
                    return Err(self.mixed(at, "is a JSON object, but"));
                }
                Ok(Some(InputText {
                    line: Some(at),
                    text: line.to_owned(),
                }))
            }
            _ => self.jsonl_text(line, at, blank).map(Some),
        }
    }

    fn jsonl_text(&self, line: &str, at: usize, blank: bool) -> Result<InputText, ModelError> {
        if blank {
            return Err(self.bad_line(at, "is blank, in a JSONL input (one object per line)"));
        }
        let Some(object) = json_object(line) else {
            return Err(match self.detected_at {
                Some(_) => self.mixed(at, "is not a JSON object, but"),
                None => self.bad_line(at, "is not a JSON object (--format jsonl)"),
            });
        };
        match object.get(&self.field).and_then(|v| v.as_str()) {
            Some(text) => Ok(InputText {
                line: Some(at),
                text: text.to_owned(),
            }),
            None => Err(self
                .bad_line(at, &format!("has no string field `{}`", self.field))
                .with("field", self.field.clone())
                .with(
                    "hint",
                    "name the text's field with --field NAME, or read lines as plain text with --format text",
                )),
        }
    }

    fn bad_line(&self, at: usize, what: &str) -> ModelError {
        ModelError::invalid_input(format!("{} line {at} {what}", self.name))
            .with("line", at)
            .with("input", self.name.clone())
    }

    /// A line that disagrees with the format `auto` read from an earlier line.
    fn mixed(&self, at: usize, what: &str) -> ModelError {
        let first = self.detected_at.unwrap_or(1);
        let kind = match self.format {
            InputFormat::Jsonl => "JSONL",
            _ => "plain text",
        };
        self.bad_line(at, &format!("{what} line {first} made the input {kind}"))
            .with(
                "hint",
                "declare the format with --format text or --format jsonl",
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(text: &str, format: InputFormat, field: &str) -> TextSource {
        let reader = Box::new(std::io::Cursor::new(text.to_owned().into_bytes()));
        TextSource::from_reader(reader, "input".into(), Vec::new(), format, field)
    }

    fn texts(source: &mut TextSource) -> Result<Vec<(Option<usize>, String)>, ModelError> {
        Ok(source
            .next_texts(100)?
            .into_iter()
            .map(|t| (t.line, t.text))
            .collect())
    }

    fn at(line: usize, text: &str) -> (Option<usize>, String) {
        (Some(line), text.to_owned())
    }

    #[test]
    fn plain_text_keeps_blank_lines_as_empty_texts() {
        let mut s = source("\na\n\nb\n", InputFormat::Auto, "text");
        assert_eq!(
            texts(&mut s).unwrap(),
            [at(1, ""), at(2, "a"), at(3, ""), at(4, "b")]
        );
        let mut s = source("\n\n", InputFormat::Auto, "text");
        assert_eq!(texts(&mut s).unwrap(), [at(1, ""), at(2, "")]);
    }

    #[test]
    fn auto_refuses_a_mixed_input_naming_the_line() {
        let err = texts(&mut source(
            "a\n{\"text\": \"b\"}\n",
            InputFormat::Auto,
            "text",
        ))
        .unwrap_err();
        assert!(
            err.message.contains("line 2") && err.message.contains("line 1"),
            "{}",
            err.message
        );
        let err = texts(&mut source(
            "{\"text\": \"a\"}\nplain\n",
            InputFormat::Auto,
            "text",
        ))
        .unwrap_err();
        assert!(err.message.contains("line 2"), "{}", err.message);
        // Declared plain text takes JSON lines as text.
        let mut s = source("a\n{\"text\": \"b\"}\n", InputFormat::Text, "text");
        assert_eq!(texts(&mut s).unwrap()[1], at(2, "{\"text\": \"b\"}"));
    }

    #[test]
    fn jsonl_needs_the_field_on_every_line() {
        let mut s = source(
            "{\"body\": \"a\"}\n{\"body\": \"b\"}\n",
            InputFormat::Jsonl,
            "body",
        );
        assert_eq!(texts(&mut s).unwrap(), [at(1, "a"), at(2, "b")]);
        let err = texts(&mut source(
            "{\"content\": \"hello\"}\n",
            InputFormat::Auto,
            "text",
        ))
        .unwrap_err();
        assert!(
            err.message.contains("line 1") && err.message.contains("`text`"),
            "{}",
            err.message
        );
        let err = texts(&mut source(
            "{\"text\": \"a\"}\n\n{\"text\": \"b\"}\n",
            InputFormat::Auto,
            "text",
        ))
        .unwrap_err();
        assert!(err.message.contains("line 2 is blank"), "{}", err.message);
        let err = texts(&mut source(
            "\n{\"text\": \"a\"}\n",
            InputFormat::Auto,
            "text",
        ))
        .unwrap_err();
        assert!(err.message.contains("line 1 is blank"), "{}", err.message);
    }

    #[test]
    fn command_line_texts_come_first_without_a_line() {
        let reader = Box::new(std::io::Cursor::new(b"x\n".to_vec()));
        let mut s = TextSource::from_reader(
            reader,
            "f".into(),
            vec!["given".into()],
            InputFormat::Auto,
            "text",
        );
        assert_eq!(texts(&mut s).unwrap(), [(None, "given".into()), at(1, "x")]);
    }
}
