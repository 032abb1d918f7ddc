//! A small backtracking regular-expression engine for `matches()` and `replaceMatches()`.
//!
//! The `fhir` crate keeps to serde and serde_json at run time, and FHIRPath needs only the common core of
//! regular expressions: literals, `.`, classes with ranges and `\d \w \s`, anchors, groups with alternation,
//! and greedy or lazy quantifiers. Patterns come from expressions the server owns (search parameters,
//! invariants), not from clients, so a backtracking matcher's worst case is acceptable. `.` matches newlines
//! too: FHIRPath evaluates regular expressions in single-line mode.

#[derive(Debug)]
enum Node {
    Char(char),
    Any,
    Class { ranges: Vec<(char, char)>, negated: bool },
    Start,
    End,
    WordBoundary,
    Group { alternatives: Vec<Vec<Node>>, capture: Option<usize> },
    Repeat { node: Box<Node>, min: usize, max: usize, greedy: bool },
}

/// A compiled pattern.
#[derive(Debug)]
pub(crate) struct Regex {
    root: Vec<Node>,
    groups: usize,
}

type Captures = Vec<Option<(usize, usize)>>;

const DIGIT: &[(char, char)] = &[('0', '9')];
const WORD: &[(char, char)] = &[('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')];
const SPACE: &[(char, char)] = &[(' ', ' '), ('\t', '\r')];

impl Regex {
    pub fn new(pattern: &str) -> Result<Regex, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut p = Parser { chars: &chars, at: 0, groups: 0 };
        let alternatives = p.alternatives()?;
        if p.at < chars.len() {
            return Err(format!("unbalanced ')' at {}", p.at));
        }
        Ok(Regex { root: vec![Node::Group { alternatives, capture: Some(0) }], groups: p.groups + 1 })
    }

    /// The first match at or after `from`: its captures (group 0 is the whole match).
    fn find_at(&self, text: &[char], from: usize) -> Option<Captures> {
        for start in from..=text.len() {
            let mut caps: Captures = vec![None; self.groups];
            let mut result = None;
            let m = Matcher { text };
            if m.seq(&self.root, start, &mut caps, &mut |_, caps| {
                result = Some(caps.clone());
                true
            }) {
                return result;
            }
        }
        None
    }

    /// Whether the pattern matches anywhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        self.find_at(&chars, 0).is_some()
    }

    /// Whether the pattern matches all of `text`.
    pub fn is_full_match(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let m = Matcher { text: &chars };
        let mut caps: Captures = vec![None; self.groups];
        m.seq(&self.root, 0, &mut caps, &mut |end, _| end == chars.len())
    }

    /// Every match replaced by `replacement`, where `$1`..`$9` stand for captured groups.
    pub fn replace_all(&self, text: &str, replacement: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::new();
        let mut at = 0;
        while at <= chars.len() {
            let Some(caps) = self.find_at(&chars, at) else { break };
            let (start, end) = caps[0].expect("group 0 is the match");
            out.extend(&chars[at..start]);
            let mut r = replacement.chars().peekable();
            while let Some(c) = r.next() {
                match (c, r.peek().and_then(|d| d.to_digit(10))) {
                    ('$', Some(g)) => {
                        r.next();
                        if let Some(Some((s, e))) = caps.get(g as usize) {
                            out.extend(&chars[*s..*e]);
                        }
                    }
                    _ => out.push(c),
                }
            }
            if end == start {
                if start < chars.len() {
                    out.push(chars[start]);
                }
                at = start + 1;
            } else {
                at = end;
            }
        }
        if at < chars.len() {
            out.extend(&chars[at..]);
        }
        out
    }
}

struct Matcher<'t> {
    text: &'t [char],
}

impl Matcher<'_> {
    fn seq(
        &self,
        nodes: &[Node],
        pos: usize,
        caps: &mut Captures,
        k: &mut dyn FnMut(usize, &mut Captures) -> bool,
    ) -> bool {
        let Some((first, rest)) = nodes.split_first() else { return k(pos, caps) };
        match first {
            Node::Start => pos == 0 && self.seq(rest, pos, caps, k),
            Node::End => pos == self.text.len() && self.seq(rest, pos, caps, k),
            Node::WordBoundary => {
                let is_word = |i: usize| self.text.get(i).is_some_and(|c| in_ranges(*c, WORD));
                let before = pos > 0 && is_word(pos - 1);
                before != is_word(pos) && self.seq(rest, pos, caps, k)
            }
            Node::Group { alternatives, capture } => {
                for alternative in alternatives {
                    let matched = self.seq(alternative, pos, caps, &mut |end, caps| {
                        let saved = capture.map(|g| caps[g]);
                        if let Some(g) = capture {
                            caps[*g] = Some((pos, end));
                        }
                        if self.seq(rest, end, caps, k) {
                            return true;
                        }
                        if let (Some(g), Some(s)) = (capture, saved) {
                            caps[*g] = s;
                        }
                        false
                    });
                    if matched {
                        return true;
                    }
                }
                false
            }
            Node::Repeat { node, min, max, greedy } => self.repeat(node, *min, *max, *greedy, 0, pos, rest, caps, k),
            single => pos < self.text.len() && matches_char(single, self.text[pos]) && self.seq(rest, pos + 1, caps, k),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn repeat(
        &self,
        node: &Node,
        min: usize,
        max: usize,
        greedy: bool,
        count: usize,
        pos: usize,
        rest: &[Node],
        caps: &mut Captures,
        k: &mut dyn FnMut(usize, &mut Captures) -> bool,
    ) -> bool {
        if greedy {
            if self.more(node, min, max, greedy, count, pos, rest, caps, k) {
                return true;
            }
            count >= min && self.seq(rest, pos, caps, k)
        } else {
            if count >= min && self.seq(rest, pos, caps, k) {
                return true;
            }
            self.more(node, min, max, greedy, count, pos, rest, caps, k)
        }
    }

    /// One more repetition of `node`, then the rest of the repetition.
    #[allow(clippy::too_many_arguments)]
    fn more(
        &self,
        node: &Node,
        min: usize,
        max: usize,
        greedy: bool,
        count: usize,
        pos: usize,
        rest: &[Node],
        caps: &mut Captures,
        k: &mut dyn FnMut(usize, &mut Captures) -> bool,
    ) -> bool {
        count < max
            && self.seq(std::slice::from_ref(node), pos, caps, &mut |end, caps| {
                end != pos && self.repeat(node, min, max, greedy, count + 1, end, rest, caps, k)
            })
    }
}

fn in_ranges(c: char, ranges: &[(char, char)]) -> bool {
    ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi)
}

fn matches_char(node: &Node, c: char) -> bool {
    match node {
        Node::Char(x) => *x == c,
        Node::Any => true,
        Node::Class { ranges, negated } => in_ranges(c, ranges) != *negated,
        _ => false,
    }
}

struct Parser<'p> {
    chars: &'p [char],
    at: usize,
    groups: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn alternatives(&mut self) -> Result<Vec<Vec<Node>>, String> {
        let mut alternatives = vec![Vec::new()];
        while let Some(c) = self.peek() {
            match c {
                ')' => break,
                '|' => {
                    self.at += 1;
                    alternatives.push(Vec::new());
                }
                _ => {
                    let atom = self.atom()?;
                    let atom = self.quantifier(atom)?;
                    alternatives.last_mut().expect("never empty").push(atom);
                }
            }
        }
        Ok(alternatives)
    }

    fn atom(&mut self) -> Result<Node, String> {
        let c = self.peek().ok_or("unexpected end")?;
        self.at += 1;
        Ok(match c {
            '.' => Node::Any,
            '^' => Node::Start,
            '$' => Node::End,
            '(' => {
                let capture = if self.chars[self.at..].starts_with(&['?', ':']) {
                    self.at += 2;
                    None
                } else {
                    self.groups += 1;
                    Some(self.groups)
                };
                let alternatives = self.alternatives()?;
                if self.peek() != Some(')') {
                    return Err("missing ')'".into());
                }
                self.at += 1;
                Node::Group { alternatives, capture }
            }
            '[' => self.class()?,
            '\\' => self.escape(false)?,
            '*' | '+' | '?' => return Err(format!("nothing to repeat before '{c}'")),
            c => Node::Char(c),
        })
    }

    fn escape(&mut self, in_class: bool) -> Result<Node, String> {
        let c = self.peek().ok_or("trailing backslash")?;
        self.at += 1;
        let class = |ranges: &[(char, char)], negated| Node::Class { ranges: ranges.to_vec(), negated };
        Ok(match c {
            'd' => class(DIGIT, false),
            'D' => class(DIGIT, true),
            'w' => class(WORD, false),
            'W' => class(WORD, true),
            's' => class(SPACE, false),
            'S' => class(SPACE, true),
            'b' if !in_class => Node::WordBoundary,
            'n' => Node::Char('\n'),
            'r' => Node::Char('\r'),
            't' => Node::Char('\t'),
            c => Node::Char(c),
        })
    }

    fn class(&mut self) -> Result<Node, String> {
        let negated = self.peek() == Some('^');
        if negated {
            self.at += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = self.peek().ok_or("missing ']'")?;
            self.at += 1;
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = if c == '\\' {
                match self.escape(true)? {
                    Node::Char(x) => x,
                    Node::Class { ranges: r, negated: false } => {
                        ranges.extend(r);
                        continue;
                    }
                    _ => return Err("negated class escapes inside [] are not supported".into()),
                }
            } else {
                c
            };
            if self.peek() == Some('-') && self.chars.get(self.at + 1).is_some_and(|c| *c != ']') {
                self.at += 1;
                let mut hi = self.peek().ok_or("missing ']'")?;
                self.at += 1;
                if hi == '\\' {
                    hi = self.peek().ok_or("missing ']'")?;
                    self.at += 1;
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Node::Class { ranges, negated })
    }

    fn quantifier(&mut self, atom: Node) -> Result<Node, String> {
        let (min, max) = match self.peek() {
            Some('*') => (0, usize::MAX),
            Some('+') => (1, usize::MAX),
            Some('?') => (0, 1),
            Some('{') => {
                let close = self.chars[self.at..].iter().position(|c| *c == '}').ok_or("missing '}'")?;
                let body: String = self.chars[self.at + 1..self.at + close].iter().collect();
                let (lo, hi) = match body.split_once(',') {
                    Some((lo, "")) => (lo.trim().parse().map_err(|_| "bad {n,}")?, usize::MAX),
                    Some((lo, hi)) => {
                        (lo.trim().parse().map_err(|_| "bad {n,m}")?, hi.trim().parse().map_err(|_| "bad {n,m}")?)
                    }
                    None => {
                        let n = body.trim().parse().map_err(|_| "bad {n}")?;
                        (n, n)
                    }
                };
                self.at += close;
                (lo, hi)
            }
            _ => return Ok(atom),
        };
        self.at += 1;
        let greedy = if self.peek() == Some('?') {
            self.at += 1;
            false
        } else {
            true
        };
        Ok(Node::Repeat { node: Box::new(atom), min, max, greedy })
    }
}
