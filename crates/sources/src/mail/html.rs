//! HTML mail bodies to plain text, in one linear pass of html5ever's tokenizer (no tree:
//! a hostile body cannot make tree building quadratic, see `page::nesting`).
//!
//! Text is kept, tags dropped, character references decoded by the tokenizer; scripts,
//! styles, the head and comments vanish; block elements and `<br>` become line breaks;
//! runs of whitespace collapse to one space and blank lines to one.

use std::cell::RefCell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

/// The readable text of an HTML document or fragment.
pub(crate) fn html_to_text(html: &str) -> String {
    let tokenizer = Tokenizer::new(TextSink::default(), TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    // The sink never asks to pause for a script, so one call consumes all the input.
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let out = tokenizer.sink.out.into_inner();
    out.finish()
}

#[derive(Default)]
struct TextSink {
    out: RefCell<Text>,
}

#[derive(Default)]
struct Text {
    buf: String,
    /// Inside an element whose content is not shown (script, style, title...).
    hidden: Option<String>,
    in_head: bool,
    /// Whitespace was seen since the last character (a space, unless a break wins).
    space: bool,
    /// Line breaks wanted before the next word (capped at 2: one blank line).
    breaks: u8,
}

impl Text {
    fn chars(&mut self, s: &str) {
        for c in s.chars() {
            if c.is_whitespace() {
                self.space = true;
                continue;
            }
            if !self.buf.is_empty() {
                if self.breaks > 0 {
                    for _ in 0..self.breaks {
                        self.buf.push('\n');
                    }
                } else if self.space {
                    self.buf.push(' ');
                }
            }
            self.breaks = 0;
            self.space = false;
            self.buf.push(c);
        }
    }

    fn line_break(&mut self, n: u8) {
        self.breaks = self.breaks.max(n).min(2);
    }

    fn finish(self) -> String {
        self.buf
    }
}

impl TokenSink for TextSink {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        let mut out = self.out.borrow_mut();
        match token {
            Token::CharacterTokens(text) => {
                if out.hidden.is_none() && !out.in_head {
                    out.chars(&text);
                }
            }
            Token::TagToken(tag) => {
                let name: &str = &tag.name;
                if let Some(hidden) = &out.hidden {
                    if tag.kind == TagKind::EndTag && hidden == name {
                        out.hidden = None;
                    }
                    return TokenSinkResult::Continue;
                }
                match (tag.kind, name) {
                    (TagKind::StartTag, "head") => out.in_head = true,
                    (TagKind::EndTag, "head") | (TagKind::StartTag, "body") => out.in_head = false,
                    // Each `<br>` breaks a line, so two make a blank one.
                    (_, "br") => out.breaks = (out.breaks + 1).min(2),
                    (TagKind::StartTag, "td" | "th") => out.space = true,
                    (_, n) if is_paragraph(n) => out.line_break(2),
                    (_, n) if is_block(n) => out.line_break(1),
                    _ => {}
                }
                if tag.kind == TagKind::StartTag && !tag.self_closing {
                    let raw = match name {
                        "script" => Some(RawKind::ScriptData),
                        "style" | "xmp" | "iframe" | "noembed" | "noframes" | "noscript" => {
                            Some(RawKind::Rawtext)
                        }
                        "title" | "textarea" => Some(RawKind::Rcdata),
                        _ => None,
                    };
                    if let Some(raw) = raw {
                        if name != "textarea" {
                            out.hidden = Some(name.to_owned());
                        }
                        return TokenSinkResult::RawData(raw);
                    }
                    if name == "template" {
                        out.hidden = Some(name.to_owned());
                    }
                }
            }
            Token::NullCharacterToken
            | Token::CommentToken(_)
            | Token::DoctypeToken(_)
            | Token::EOFToken
            | Token::ParseError(_) => {}
        }
        TokenSinkResult::Continue
    }
}

fn is_paragraph(name: &str) -> bool {
    matches!(
        name,
        "p" | "h1"
            | "h2"
            | "h3"
            | "h4"
            | "h5"
            | "h6"
            | "table"
            | "blockquote"
            | "pre"
            | "ul"
            | "ol"
            | "dl"
            | "hr"
    )
}

fn is_block(name: &str) -> bool {
    matches!(
        name,
        "div"
            | "li"
            | "tr"
            | "dt"
            | "dd"
            | "section"
            | "article"
            | "header"
            | "footer"
            | "main"
            | "nav"
            | "aside"
            | "address"
            | "figure"
            | "figcaption"
            | "form"
            | "fieldset"
            | "center"
            | "caption"
            | "tbody"
            | "thead"
            | "tfoot"
    )
}

#[cfg(test)]
mod tests {
    use super::html_to_text;

    #[test]
    fn tags_go_text_stays() {
        assert_eq!(html_to_text("<b>Hello</b>, <i>world</i>!"), "Hello, world!");
    }

    #[test]
    fn entities_are_decoded() {
        assert_eq!(
            html_to_text("Fish &amp; chips &lt;3 &eacute;t&eacute; &#8364;5&nbsp;now"),
            "Fish & chips <3 été €5 now"
        );
    }

    #[test]
    fn whitespace_collapses_and_blocks_break_lines() {
        let html = "<html><head><title>T</title><style>p{color:red}</style></head>\
            <body>\n  <h1>Title</h1>\n<p>First   para\n graph.</p><p>Second</p>\
            <div>line one</div><div>line two<br>after break</div>\
            <script>alert('x')</script><!-- hidden comment --></body></html>";
        assert_eq!(
            html_to_text(html),
            "Title\n\nFirst para graph.\n\nSecond\n\nline one\nline two\nafter break"
        );
    }

    #[test]
    fn tables_and_lists_read_naturally() {
        let html = "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>\
            <ul><li>one</li><li>two</li></ul>";
        assert_eq!(html_to_text(html), "a b\nc d\n\none\ntwo");
    }

    #[test]
    fn broken_html_still_gives_text() {
        assert_eq!(html_to_text("<p>unclosed <b>bold <i>x"), "unclosed bold x");
        assert_eq!(html_to_text("a < b and c > d"), "a < b and c > d");
        assert_eq!(html_to_text("<div"), "");
        assert_eq!(html_to_text(""), "");
    }

    #[test]
    fn deep_nesting_is_linear() {
        let html = format!(
            "{}deep{}",
            "<div>".repeat(100_000),
            "</div>".repeat(100_000)
        );
        let start = std::time::Instant::now();
        assert_eq!(html_to_text(&html), "deep");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
