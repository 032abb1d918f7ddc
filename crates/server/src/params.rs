//! Query-string parameters, in order, percent-decoded.

/// The decoded `name=value` pairs of a query string (or a form body), in their original order.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        match query {
            None | Some("") => Params::default(),
            Some(q) => {
                Params(form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
            }
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Re-encodes the parameters, leaving out those named in `skip`.
    pub fn encode_without(&self, skip: &[&str]) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.iter().filter(|(k, _)| !skip.contains(k)) {
            out.append_pair(k, v);
        }
        out.finish()
    }
}
