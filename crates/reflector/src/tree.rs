//! The reflection tree: which reflections a data point matches, without testing every one.
//!
//! A reflection's condition holds one matcher per routing field (plugin, collection, item =
//! the point's name, target) plus residual predicates (tag matchers, tag presence, value
//! comparisons). The tree has one level per routing field, in that order; at each level an
//! exact matcher is a key of the level's map and any other matcher (any, glob, regex) goes to
//! the level's wildcard branch, where it is kept as a residual. A lookup follows the point's own
//! value and the wildcard branch at each level, so it visits at most 2⁴ leaves whatever the
//! number of reflections, and tests only the residuals found there. Matches are returned in
//! definition order, cut after the first that says `stop`: every matching reflection fires
//! unless one stops the rest. The tree is immutable; a new definition set builds a new tree,
//! swapped in whole.

use std::collections::{BTreeMap, HashMap};

use regex::Regex;

/// How one field is matched.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Anything, including absence.
    Any,
    /// Exactly this text.
    Exact(String),
    /// A shell glob (`*`, `?`, `[…]`), compiled.
    Glob(String, Regex),
    /// A regular expression (unanchored unless it says so).
    Regex(Regex),
}

impl Matcher {
    /// `*` alone: any; `~re`: a regex; with glob characters: a glob; otherwise exact.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        if let Some(re) = text.strip_prefix('~') {
            return Regex::new(re)
                .map(Self::Regex)
                .map_err(|e| format!("bad regex {re:?}: {e}"));
        }
        if text.contains(['*', '?', '[']) {
            let mut re = String::from("^");
            let mut chars = text.chars().peekable();
            while let Some(c) = chars.next() {
                match c {
                    '*' => re.push_str(".*"),
                    '?' => re.push('.'),
                    '[' => {
                        re.push('[');
                        if chars.peek() == Some(&'!') {
                            chars.next();
                            re.push('^');
                        }
                        for c in chars.by_ref() {
                            if c == ']' {
                                break;
                            }
                            if c == '\\' || c == '^' {
                                re.push('\\');
                            }
                            re.push(c);
                        }
                        re.push(']');
                    }
                    c => re.push_str(&regex::escape(&c.to_string())),
                }
            }
            re.push('$');
            return Regex::new(&re)
                .map(|r| Self::Glob(text.to_string(), r))
                .map_err(|e| format!("bad glob {text:?}: {e}"));
        }
        Ok(Self::Exact(text.to_string()))
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(s) => s == value,
            Self::Glob(_, r) | Self::Regex(r) => r.is_match(value),
        }
    }
}

/// A numeric comparison of the point's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Compare {
    /// `>`
    Gt(f64),
    /// `>=`
    Ge(f64),
    /// `<`
    Lt(f64),
    /// `<=`
    Le(f64),
    /// `==`
    Eq(f64),
    /// `!=`
    Ne(f64),
}

impl Compare {
    fn holds(self, v: f64) -> bool {
        match self {
            Self::Gt(x) => v > x,
            Self::Ge(x) => v >= x,
            Self::Lt(x) => v < x,
            Self::Le(x) => v <= x,
            Self::Eq(x) => v == x,
            Self::Ne(x) => v != x,
        }
    }
}

/// A point's tags, as conditions look them up (owned or borrowed maps alike).
pub trait Tags: std::fmt::Debug {
    /// The value of tag `key`.
    fn tag(&self, key: &str) -> Option<&str>;
}

impl Tags for BTreeMap<String, String> {
    fn tag(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Tags for BTreeMap<crate::point::Text<'_>, crate::point::Text<'_>> {
    fn tag(&self, key: &str) -> Option<&str> {
        self.get(key).map(|v| &**v)
    }
}

/// What a point offers to conditions.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The plugin that collected it.
    pub plugin: &'a str,
    /// The collection.
    pub collection: &'a str,
    /// The point's name.
    pub item: &'a str,
    /// The target.
    pub target: &'a str,
    /// The point's tags.
    pub tags: &'a dyn Tags,
    /// The value, when it is a number.
    pub value: Option<f64>,
}

/// A reflection's condition.
#[derive(Debug, Clone)]
pub struct Condition {
    /// Routing fields, in tree order: plugin, collection, item, target.
    pub route: [Matcher; 4],
    /// Tag matchers (the tag must be present and match).
    pub tags: Vec<(String, Matcher)>,
    /// Tags that must be present.
    pub present: Vec<String>,
    /// Comparisons the numeric value must pass (a non-numeric value passes none).
    pub value: Vec<Compare>,
}

impl Condition {
    /// Whether `s` satisfies the whole condition (the linear-scan definition of a match).
    pub fn matches(&self, s: &Subject<'_>) -> bool {
        let fields = [s.plugin, s.collection, s.item, s.target];
        self.route.iter().zip(fields).all(|(m, v)| m.matches(v)) && self.residual(s)
    }

    /// Everything but the exact routing fields (which the tree has already followed).
    fn residual(&self, s: &Subject<'_>) -> bool {
        let fields = [s.plugin, s.collection, s.item, s.target];
        self.route
            .iter()
            .zip(fields)
            .all(|(m, v)| matches!(m, Matcher::Exact(_)) || m.matches(v))
            && self
                .tags
                .iter()
                .all(|(k, m)| s.tags.tag(k).is_some_and(|v| m.matches(v)))
            && self.present.iter().all(|k| s.tags.tag(k).is_some())
            && (self.value.is_empty() || s.value.is_some_and(|v| self.value.iter().all(|c| c.holds(v))))
    }
}

#[derive(Debug, Default)]
struct Node {
    exact: HashMap<String, Node>,
    wildcard: Option<Box<Node>>,
    /// At the last level: the reflections (by index) ending here.
    leaves: Vec<usize>,
}

/// The compiled tree over a list of conditions (index = definition order).
#[derive(Debug, Default)]
pub struct Tree {
    root: Node,
    conditions: Vec<Condition>,
    stops: Vec<bool>,
}

impl Tree {
    /// Build the tree of `reflections`: each a condition and whether a match stops the later ones.
    pub fn build(reflections: Vec<(Condition, bool)>) -> Self {
        let mut root = Node::default();
        let mut conditions = Vec::with_capacity(reflections.len());
        let mut stops = Vec::with_capacity(reflections.len());
        for (i, (c, stop)) in reflections.into_iter().enumerate() {
            let mut node = &mut root;
            for m in &c.route {
                node = match m {
                    Matcher::Exact(key) => node.exact.entry(key.clone()).or_default(),
                    _ => node.wildcard.get_or_insert_with(Box::default),
                };
            }
            node.leaves.push(i);
            conditions.push(c);
            stops.push(stop);
        }
        Self {
            root,
            conditions,
            stops,
        }
    }

    /// Number of reflections.
    pub fn len(&self) -> usize {
        self.conditions.len()
    }

    /// True without reflections.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// The reflections `s` matches, in definition order, up to and including the first that stops.
    pub fn lookup(&self, s: &Subject<'_>) -> Vec<usize> {
        let fields = [s.plugin, s.collection, s.item, s.target];
        let mut hits = Vec::new();
        let mut stack: Vec<(&Node, usize)> = vec![(&self.root, 0)];
        while let Some((node, depth)) = stack.pop() {
            if depth == fields.len() {
                hits.extend(node.leaves.iter().copied().filter(|&i| self.conditions[i].residual(s)));
                continue;
            }
            if let Some(child) = node.exact.get(fields[depth]) {
                stack.push((child, depth + 1));
            }
            if let Some(child) = &node.wildcard {
                stack.push((child, depth + 1));
            }
        }
        hits.sort_unstable();
        self.cut_at_stop(hits)
    }

    /// The linear scan the tree replaces: every condition tested in order.
    pub fn scan(&self, s: &Subject<'_>) -> Vec<usize> {
        let hits = (0..self.conditions.len())
            .filter(|&i| self.conditions[i].matches(s))
            .collect();
        self.cut_at_stop(hits)
    }

    fn cut_at_stop(&self, mut hits: Vec<usize>) -> Vec<usize> {
        if let Some(pos) = hits.iter().position(|&i| self.stops[i]) {
            hits.truncate(pos + 1);
        }
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(route: [&str; 4]) -> Condition {
        Condition {
            route: route.map(|r| Matcher::parse(r).unwrap()),
            tags: Vec::new(),
            present: Vec::new(),
            value: Vec::new(),
        }
    }

    #[test]
    fn matchers_parse_by_their_shape() {
        assert!(matches!(Matcher::parse("*").unwrap(), Matcher::Any));
        assert!(matches!(Matcher::parse("cpu").unwrap(), Matcher::Exact(_)));
        let g = Matcher::parse("web-[0-9]?.*").unwrap();
        assert!(g.matches("web-1a.example") && !g.matches("xweb-1a."));
        let n = Matcher::parse("[!a]x").unwrap();
        assert!(n.matches("bx") && !n.matches("ax"));
        let r = Matcher::parse("~^disk\\.(free|used)$").unwrap();
        assert!(r.matches("disk.free") && !r.matches("disk.total"));
        assert!(Matcher::parse("~(").is_err());
    }

    #[test]
    fn every_match_fires_in_order_until_one_stops() {
        let tags = BTreeMap::from([("mount".to_string(), "/".to_string())]);
        let s = Subject {
            plugin: "demo",
            collection: "host",
            item: "system.load.1",
            target: "localhost",
            tags: &tags,
            value: Some(3.0),
        };
        let mut high = cond(["demo", "*", "system.load.*", "*"]);
        high.value = vec![Compare::Gt(2.0)];
        let mut low = cond(["demo", "*", "system.load.*", "*"]);
        low.value = vec![Compare::Lt(2.0)];
        let mut tagged = cond(["*", "host", "*", "local*"]);
        tagged.tags = vec![("mount".into(), Matcher::parse("/").unwrap())];
        let t = Tree::build(vec![
            (cond(["demo", "host", "system.load.1", "localhost"]), false),
            (high, false),
            (low, false),
            (tagged, true),
            (cond(["*", "*", "*", "*"]), false),
        ]);
        assert_eq!(t.lookup(&s), [0, 1, 3], "the catch-all comes after a stop");
        assert_eq!(t.lookup(&s), t.scan(&s));
    }
}
