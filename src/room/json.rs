//! [`doc_to_json`]: a room's document as JSON, for the document API (`GET /rooms/{room}?format=json`).

use yrs::{Doc, ReadTxn, Transact};

/// Renders every root type of `doc` as JSON: `{root name: value}`.
///
/// Typed roots render by their type: text as a string, maps as objects, arrays as arrays,
/// XML as its XML string. A node never declares types itself, so roots it only received
/// over the wire are untyped; their type is inferred from their content the way yrs does:
/// only keyed entries → object; a sequence starting with text → string (with keyed entries
/// too, formatted XML text → its XML string); other sequences → array; keyed entries and a
/// non-text sequence → XML element string; no content at all → `{}`.
pub fn doc_to_json(doc: &Doc) -> serde_json::Value {
    use yrs::types::AsPrelim;
    use yrs::types::{GetString, ToJson};
    use yrs::{ArrayRef, In, MapRef, Out, TextRef, XmlElementRef, XmlTextRef};
    let txn = doc.transact();
    let mut roots = serde_json::Map::new();
    for (name, value) in txn.root_refs() {
        let any_json = |any: yrs::Any| serde_json::to_value(any).unwrap_or(serde_json::Value::Null);
        let rendered = match value {
            Out::YText(t) => serde_json::Value::String(t.get_string(&txn)),
            Out::YMap(m) => any_json(m.to_json(&txn)),
            Out::YArray(a) => any_json(a.to_json(&txn)),
            Out::YXmlFragment(x) => serde_json::Value::String(x.get_string(&txn)),
            Out::YXmlElement(x) => serde_json::Value::String(x.get_string(&txn)),
            Out::YXmlText(x) => serde_json::Value::String(x.get_string(&txn)),
            Out::UndefinedRef(ptr) => match Out::UndefinedRef(ptr).as_prelim(&txn) {
                In::Text(_) => serde_json::Value::String(TextRef::from(ptr).get_string(&txn)),
                In::Array(_) => any_json(ArrayRef::from(ptr).to_json(&txn)),
                In::XmlText(_) => serde_json::Value::String(XmlTextRef::from(ptr).get_string(&txn)),
                In::XmlElement(_) => {
                    serde_json::Value::String(XmlElementRef::from(ptr).get_string(&txn))
                }
                _ => any_json(MapRef::from(ptr).to_json(&txn)),
            },
            other => any_json(other.to_json(&txn)),
        };
        roots.insert(name.to_string(), rendered);
    }
    serde_json::Value::Object(roots)
}
