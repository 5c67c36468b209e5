//! The `ARG`s and `ENV`s of the image being built, in the order they were last set.

use std::collections::HashMap;

/// Name/value pairs in the order each name was last set: setting a name again moves it
/// to the end. Each set takes constant time, so a Kubefile of many `ENV` lines builds in
/// time linear in its length.
#[derive(Clone, Default)]
pub struct Vars {
    slots: Vec<Option<(String, String)>>,
    at: HashMap<String, usize>,
}

impl Vars {
    pub fn set(&mut self, name: &str, value: &str) {
        if let Some(old) = self.at.insert(name.to_string(), self.slots.len()) {
            self.slots[old] = None;
        }
        self.slots.push(Some((name.to_string(), value.to_string())));
    }

    pub fn iter(&self) -> impl Iterator<Item = &(String, String)> {
        self.slots.iter().flatten()
    }
}

/// As a list of pairs: this text is part of `RUN`'s cache key.
impl std::fmt::Debug for Vars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_set_again_moves_to_the_end_and_reads_as_a_list_of_pairs() {
        let mut v = Vars::default();
        v.set("A", "1");
        v.set("B", "2");
        v.set("A", "3");
        let list: Vec<(String, String)> = vec![("B".into(), "2".into()), ("A".into(), "3".into())];
        assert_eq!(v.iter().cloned().collect::<Vec<_>>(), list);
        assert_eq!(format!("{v:?}"), format!("{list:?}"));
    }
}
