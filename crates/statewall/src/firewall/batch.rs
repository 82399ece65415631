//! Batches of rule operations (`POST .../chain/{chain}/batch`, and the journal's lines):
//! each operation read straight into its typed form, resolved against the chain as the
//! operations before it leave it, every rule checked once (its normal form and its
//! classifier rule from the same parse), all or nothing.

use std::borrow::Cow;

use serde::{
    de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor},
    Deserialize, Deserializer, Serialize, Serializer,
};

use super::{rules::Rule, tables::Edit, FirewallError, RuleSpec};

/// One operation of a batch as sent: `operation` (insert, append, update or delete, any
/// case) beside the rule's fields, in one JSON object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchOp {
    /// What to do.
    pub operation: String,
    /// The rule's fields (`id` says where).
    pub rule: RuleSpec,
}

impl<'de> Deserialize<'de> for BatchOp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(OpVisitor)
    }
}

struct OpVisitor;

impl<'de> Visitor<'de> for OpVisitor {
    type Value = BatchOp;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an operation: a JSON object with `operation` and the rule's fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BatchOp, A::Error> {
        // The rule reads the object's entries but `operation`, which is kept aside: the
        // rule's own reading refuses an unknown field, as a flattened struct would not.
        let mut rest = Rest {
            map,
            operation: None,
        };
        let rule = RuleSpec::deserialize(de::value::MapAccessDeserializer::new(&mut rest))?;
        let operation = rest.operation.ok_or_else(|| {
            de::Error::custom("missing field `operation` (insert, append, update or delete)")
        })?;
        Ok(BatchOp { operation, rule })
    }
}

/// An operation's entries other than `operation`, which it takes aside.
struct Rest<A> {
    map: A,
    operation: Option<String>,
}

/// A key as read: borrowed from the body when it can be.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The rule's seed for one key, or that seed given back when the key is `operation`.
enum Keyed<K, V> {
    Operation(K),
    Field(V),
}

/// Reads a key and hands it to the rule's seed unless it is `operation`: inside the map's
/// own key reading, so that a refused key is reported at its path (`rules[3].srcc`).
struct KeySeed<K>(K);

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySeed<K> {
    type Value = Keyed<K, K::Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let Key(k) = Key::deserialize(d)?;
        if k == "operation" {
            return Ok(Keyed::Operation(self.0));
        }
        match k {
            Cow::Borrowed(b) => self
                .0
                .deserialize(de::value::BorrowedStrDeserializer::new(b)),
            Cow::Owned(o) => self.0.deserialize(o.into_deserializer()),
        }
        .map(Keyed::Field)
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for &mut Rest<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        let mut seed = seed;
        loop {
            match self.map.next_key_seed(KeySeed(seed))? {
                None => return Ok(None),
                Some(Keyed::Field(v)) => return Ok(Some(v)),
                Some(Keyed::Operation(back)) => {
                    if self.operation.is_some() {
                        return Err(de::Error::duplicate_field("operation"));
                    }
                    self.operation = Some(self.map.next_value()?);
                    seed = back;
                }
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.map.next_value_seed(seed)
    }
}

impl Serialize for BatchOp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Flat<'a> {
            operation: &'a str,
            #[serde(flatten)]
            rule: &'a RuleSpec,
        }
        Flat {
            operation: &self.operation,
            rule: &self.rule,
        }
        .serialize(s)
    }
}

/// A rule checked once: its normal form, kept in the chain, and the classifier's rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// Normalised (ids are positions, so without one).
    pub spec: Box<RuleSpec>,
    /// What the kernel's tables hold for it.
    pub rule: Rule,
}

impl Checked {
    fn of(r: &RuleSpec) -> Result<Checked, FirewallError> {
        let (spec, rule) = r.checked()?;
        Ok(Checked {
            spec: Box::new(spec),
            rule,
        })
    }
}

/// One operation of a batch, resolved against the chain as the operations before it left
/// it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecEdit {
    /// A new rule at this index.
    Insert(usize, Checked),
    /// The rule at this index goes.
    Delete(usize),
    /// The rule at this index becomes this one.
    Update(usize, Checked),
}

impl SpecEdit {
    /// The classifier's edit.
    pub fn edit(&self) -> Edit {
        match self {
            SpecEdit::Insert(i, r) => Edit::Insert(*i, r.rule.clone()),
            SpecEdit::Delete(i) => Edit::Delete(*i),
            SpecEdit::Update(i, r) => Edit::Update(*i, r.rule.clone()),
        }
    }

    /// Applies it to a chain's rules.
    pub fn apply(self, rules: &mut Vec<Box<RuleSpec>>) {
        match self {
            SpecEdit::Insert(i, r) => rules.insert(i, r.spec),
            SpecEdit::Delete(i) => {
                rules.remove(i);
            }
            SpecEdit::Update(i, r) => rules[i] = r.spec,
        }
    }
}

/// A batch's result: the new rules, and for each the position it had before (`None`:
/// new).
pub type Batched = (Vec<Box<RuleSpec>>, Vec<Option<usize>>);

/// Resolves a batch against a chain's rules without changing them: the edits in order,
/// or the index of the first bad operation and why. A rule of the chain is only looked at
/// by a delete that names its fields.
pub fn plan_batch(
    rules: &[Box<RuleSpec>],
    ops: &[BatchOp],
) -> Result<Vec<SpecEdit>, (usize, FirewallError)> {
    // The chain as the operations so far leave it: Ok(index in `rules`) or Err(index in
    // `out` of the edit that brought the rule); made only for a delete by fields.
    let mut now: Option<Vec<Result<usize, usize>>> = None;
    let mut n = rules.len();
    let mut out: Vec<SpecEdit> = Vec::with_capacity(ops.len());
    for (i, op) in ops.iter().enumerate() {
        let rule = &op.rule;
        let id = rule.id;
        let checked = || Checked::of(rule).map_err(|e| (i, e));
        let edit = match op.operation.to_ascii_lowercase().as_str() {
            "append" => SpecEdit::Insert(n, checked()?),
            "insert" => {
                let id = id.ok_or((i, FirewallError::Operation("insert needs id")))?;
                if id > n {
                    return Err((i, FirewallError::PastEnd { id, rules: n }));
                }
                SpecEdit::Insert(id, checked()?)
            }
            "update" => {
                let id = id.ok_or((i, FirewallError::Operation("update needs id")))?;
                if id >= n {
                    return Err((i, FirewallError::NoSuchRule { id, rules: n }));
                }
                SpecEdit::Update(id, checked()?)
            }
            "delete" => match id {
                Some(id) if id >= n => {
                    return Err((i, FirewallError::NoSuchRule { id, rules: n }));
                }
                Some(id) => SpecEdit::Delete(id),
                None => {
                    let want = rule.normalise().map_err(|e| (i, e))?;
                    let spec = |s: &Result<usize, usize>| match s {
                        Ok(r) => &rules[*r],
                        Err(e) => match &out[*e] {
                            SpecEdit::Insert(_, r) | SpecEdit::Update(_, r) => &r.spec,
                            SpecEdit::Delete(_) => unreachable!("a delete brings no rule"),
                        },
                    };
                    let now = now.get_or_insert_with(|| {
                        let mut v: Vec<Result<usize, usize>> = (0..rules.len()).map(Ok).collect();
                        for (j, e) in out.iter().enumerate() {
                            track(&mut v, e, j);
                        }
                        v
                    });
                    let at = now
                        .iter()
                        .position(|s| **spec(s) == want)
                        .ok_or((i, FirewallError::Operation("no rule with these fields")))?;
                    SpecEdit::Delete(at)
                }
            },
            o => return Err((i, FirewallError::UnknownOperation(o.into()))),
        };
        if let Some(now) = now.as_mut() {
            track(now, &edit, out.len());
        }
        n = match edit {
            SpecEdit::Insert(..) => n + 1,
            SpecEdit::Delete(_) => n - 1,
            SpecEdit::Update(..) => n,
        };
        out.push(edit);
    }
    Ok(out)
}

/// Follows edit number `j` of a batch in the list of where each rule comes from.
fn track(now: &mut Vec<Result<usize, usize>>, e: &SpecEdit, j: usize) {
    match e {
        SpecEdit::Insert(at, _) => now.insert(*at, Err(j)),
        SpecEdit::Delete(at) => {
            let _ = now.remove(*at);
        }
        SpecEdit::Update(at, _) => now[*at] = Err(j),
    }
}

/// Applies a batch to a copy of the chain's rules: the new rules, or the index of the
/// first bad operation and why (nothing applied). `origin[i]` says which old rule the new
/// rule `i` is (for its counters), `None` for new ones.
pub fn apply_batch(
    rules: &[Box<RuleSpec>],
    ops: &[BatchOp],
) -> Result<Batched, (usize, FirewallError)> {
    let plan = plan_batch(rules, ops)?;
    let mut out: Vec<Box<RuleSpec>> = rules.to_vec();
    let mut origin: Vec<Option<usize>> = (0..rules.len()).map(Some).collect();
    for e in plan {
        match &e {
            SpecEdit::Insert(i, _) => origin.insert(*i, None),
            SpecEdit::Delete(i) => {
                origin.remove(*i);
            }
            SpecEdit::Update(..) => {}
        }
        e.apply(&mut out);
    }
    Ok((out, origin))
}

#[cfg(test)]
mod tests {
    use super::super::PortArg;
    use super::*;
    use serde_json::json;

    fn ops(v: serde_json::Value) -> Vec<BatchOp> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn compat_example_batch() {
        // COMPAT.md's example, kept once as the REST fuzz target's seed.
        let v: serde_json::Value = serde_json::from_str(include_str!(
            "../../../../fuzz/corpus/rest_bodies/compat_batch"
        ))
        .unwrap();
        let (rules, origin) = apply_batch(&[], &ops(v["rules"].clone())).unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].src.as_deref(), Some("10.0.0.11/32"));
        assert_eq!(rules[0].dst.as_deref(), Some("10.0.0.0/24"), "masked");
        assert_eq!(rules[0].l4proto.as_deref(), Some("ICMP"));
        assert_eq!(rules[0].action.as_deref(), Some("DROP"));
        assert_eq!(origin, vec![None]);
        // A bad operation anywhere: its index, nothing applied.
        let bad = ops(json!([
            {"operation": "append", "action": "drop"},
            {"operation": "append", "dport": "80", "action": "drop"}
        ]));
        let (i, e) = apply_batch(&rules, &bad).unwrap_err();
        assert_eq!(i, 1);
        assert!(
            matches!(&e, FirewallError::At { at, source } if at == "dport"
                && **source == FirewallError::Needs("a port needs l4proto TCP or UDP")),
            "{e:?}"
        );
        let (i, e) =
            apply_batch(&rules, &ops(json!([{"operation": "update", "id": 5}]))).unwrap_err();
        assert_eq!(i, 0);
        assert!(
            matches!(e, FirewallError::NoSuchRule { id: 5, .. }),
            "{e:?}"
        );
        let (_, e) = apply_batch(
            &rules,
            &ops(json!([{"operation": "append", "src": "10.0.0.1/33"}])),
        )
        .unwrap_err();
        assert_eq!(
            e,
            FirewallError::PrefixLen {
                text: "10.0.0.1/33".into(),
                max: 32
            }
            .at("src")
        );
        assert_eq!(e.to_string(), "src: \"10.0.0.1/33\": prefix length 0-32");
        let (r, o) = apply_batch(
            &rules,
            &ops(
                json!([{"operation": "insert", "id": 0, "l4proto": "tcp", "dport": "1000-2000", "tcpflags": "syn,!ack", "action": "accept"}]),
            ),
        )
        .unwrap();
        assert_eq!(o, vec![None, Some(0)]);
        assert_eq!(r[0].dport, Some(PortArg::S("1000-2000".into())));
        assert_eq!(r[0].rule().tcpflags, Some((0x12, 0x02)));
    }

    #[test]
    fn an_operation_is_read_with_its_rule() {
        // `operation` anywhere among the fields; the rest is the rule, unknown fields refused.
        let text = r#"{"src": "10.0.0.1", "operation": "Append", "dport": 22, "l4proto": "tcp"}"#;
        let op: BatchOp = serde_json::from_str(text).unwrap();
        assert_eq!(op.operation, "Append");
        assert_eq!(op.rule.src.as_deref(), Some("10.0.0.1"));
        assert_eq!(op.rule.dport, Some(PortArg::N(22)));
        // Written back as one object, and read again the same.
        let again: BatchOp = serde_json::from_slice(&serde_json::to_vec(&op).unwrap()).unwrap();
        assert_eq!(again, op);
        for (text, want) in [
            (
                r#"{"operation": "append", "srcc": "10.0.0.1"}"#,
                "unknown field `srcc`",
            ),
            (r#"{"src": "10.0.0.1"}"#, "missing field `operation`"),
            (
                r#"{"operation": "append", "operation": "delete"}"#,
                "duplicate field `operation`",
            ),
            (r#"{"operation": 3}"#, "invalid type: integer `3`"),
            (r#"["append"]"#, "an operation: a JSON object"),
            (r#"{"operation": "append", "dport": -1}"#, "expected a port"),
        ] {
            let e = serde_json::from_str::<BatchOp>(text)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn a_refused_field_is_reported_at_its_path() {
        #[derive(Debug, Deserialize)]
        struct Body {
            #[allow(dead_code)]
            rules: Vec<BatchOp>,
        }
        for (text, path) in [
            (
                r#"{"rules": [{"operation": "append"}, {"operation": "append", "srcc": "x"}]}"#,
                "rules[1].srcc",
            ),
            (
                r#"{"rules": [{"operation": "append", "dport": -1}]}"#,
                "rules[0].dport",
            ),
        ] {
            let de = &mut serde_json::Deserializer::from_str(text);
            let e = serde_path_to_error::deserialize::<_, Body>(de).unwrap_err();
            assert_eq!(e.path().to_string(), path, "{text}: {e}");
        }
    }

    #[test]
    fn a_rule_checked_once_is_its_normal_form_and_that_forms_rule() {
        for (src, normal) in [
            ("10.1.2.0/24", "10.1.2.0/24"),
            ("10.1.2.3/24", "10.1.2.0/24"),
            ("10.1.2.0/024", "10.1.2.0/24"),
            ("10.1.2.0/+24", "10.1.2.0/24"),
            ("10.1.2.3", "10.1.2.3/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:DB8::1/32", "2001:db8::/32"),
        ] {
            let r = RuleSpec {
                id: Some(4),
                src: Some(src.into()),
                l4proto: Some("udp".into()),
                dport: Some(PortArg::S(" 1000-1000 ".into())),
                description: Some("kept".into()),
                ..Default::default()
            };
            let (n, rule) = r.checked().unwrap();
            assert_eq!(n.src.as_deref(), Some(normal), "{src}");
            assert_eq!(n.id, None);
            assert_eq!(n.dport, Some(PortArg::S("1000".into())));
            assert_eq!(n.description.as_deref(), Some("kept"));
            assert_eq!(n.rule(), rule, "{src}");
            assert_eq!(n.normalise().as_ref(), Ok(&n), "{src}");
        }
        for p in [PortArg::N(0), PortArg::N(65536), PortArg::S("2-1".into())] {
            let r = RuleSpec {
                l4proto: Some("tcp".into()),
                sport: Some(p.clone()),
                ..Default::default()
            };
            assert!(r.checked().is_err(), "{p:?}");
        }
    }
}
