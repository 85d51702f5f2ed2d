//! Tokenizer for PTX text.

use crate::Error;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// Identifiers, opcodes with their `.modifiers`, directives, registers and numbers.
    Word(String),
    Str(String),
    Punct(char),
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub line: u32,
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '%' | '.')
}

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, Error> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let mut line = 1u32;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            let start = line;
            i += 2;
            loop {
                if i + 1 >= chars.len() {
                    return Err(Error::Parse {
                        line: start,
                        msg: "unterminated /* comment".into(),
                    });
                }
                if chars[i] == '*' && chars[i + 1] == '/' {
                    i += 2;
                    break;
                }
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
        } else if c == '"' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\n' {
                    line += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            i += 1;
            toks.push(Token { tok: Tok::Str(s), line });
        } else if word_char(c) {
            let mut s = String::new();
            let numeric = c.is_ascii_digit();
            while i < chars.len() {
                let ch = chars[i];
                if word_char(ch) {
                    s.push(ch);
                    i += 1;
                } else if ch == ':' && chars.get(i + 1) == Some(&':') {
                    // `.shared::cta`, `.L2::128B`
                    s.push_str("::");
                    i += 2;
                } else if numeric
                    && matches!(ch, '+' | '-')
                    && s.ends_with(['e', 'E'])
                    && !s.starts_with("0x")
                    && !s.starts_with("0X")
                    && !s.starts_with("0f")
                    && !s.starts_with("0F")
                    && !s.starts_with("0d")
                    && !s.starts_with("0D")
                {
                    // exponent sign of a decimal float literal
                    s.push(ch);
                    i += 1;
                } else {
                    break;
                }
            }
            toks.push(Token {
                tok: Tok::Word(s),
                line,
            });
        } else if "{}[](),;:+-@!<>|=".contains(c) {
            toks.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
        } else {
            return Err(Error::Parse {
                line,
                msg: format!("unexpected character `{c}`"),
            });
        }
    }
    Ok(toks)
}
