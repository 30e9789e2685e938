//! Property: the reflection tree returns exactly what testing every condition in order returns
//! (the same reflections, the same order, the same cut at the first `stop`), for arbitrary
//! mixes of exact, glob, regex and any matchers, tag predicates and value comparisons.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use reflector::tree::{Compare, Condition, Matcher, Subject, Tree};

const WORDS: &[&str] = &["a", "b", "ab", "ba", "c"];

fn matcher() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(str::to_string),
        1 => Just("*".to_string()),
        1 => prop::sample::select(vec!["a*", "?", "[ab]", "*b", "[!a]*"]).prop_map(str::to_string),
        1 => prop::sample::select(vec!["~^b", "~a$", "~."]).prop_map(str::to_string),
    ]
}

fn compare() -> impl Strategy<Value = Compare> {
    (0..6u8, -2i32..3).prop_map(|(op, x)| {
        let x = f64::from(x);
        match op {
            0 => Compare::Gt(x),
            1 => Compare::Ge(x),
            2 => Compare::Lt(x),
            3 => Compare::Le(x),
            4 => Compare::Eq(x),
            _ => Compare::Ne(x),
        }
    })
}

fn condition() -> impl Strategy<Value = (Condition, bool)> {
    (
        [matcher(), matcher(), matcher(), matcher()],
        proptest::collection::vec((prop::sample::select(vec!["t", "u"]), matcher()), 0..2),
        proptest::collection::vec(prop::sample::select(vec!["t", "u"]), 0..2),
        proptest::collection::vec(compare(), 0..2),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(route, tags, present, value, stop)| {
            let c = Condition {
                route: route.map(|m| Matcher::parse(&m).unwrap()),
                tags: tags
                    .into_iter()
                    .map(|(k, m)| (k.to_string(), Matcher::parse(&m).unwrap()))
                    .collect(),
                present: present.into_iter().map(str::to_string).collect(),
                value,
            };
            (c, stop)
        })
}

fn subject() -> impl Strategy<Value = ([String; 4], BTreeMap<String, String>, Option<f64>)> {
    let word = || prop::sample::select(WORDS).prop_map(str::to_string);
    (
        [word(), word(), word(), word()],
        proptest::collection::btree_map(
            prop::sample::select(vec!["t".to_string(), "u".to_string()]),
            word(),
            0..3,
        ),
        proptest::option::of((-3i32..4).prop_map(f64::from)),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn the_tree_agrees_with_the_linear_scan(
        reflections in proptest::collection::vec(condition(), 0..40),
        subjects in proptest::collection::vec(subject(), 1..20),
    ) {
        let tree = Tree::build(reflections);
        for ([plugin, collection, item, target], tags, value) in &subjects {
            let s = Subject { plugin, collection, item, target, tags, value: *value };
            prop_assert_eq!(tree.lookup(&s), tree.scan(&s));
        }
    }
}
