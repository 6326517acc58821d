//! Sets of columns (positions in the schema) as bits: which columns one event gives a value.

/// A set of column positions. Every set of one plan has the same size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ColumnSet {
    words: Vec<u64>,
}

impl ColumnSet {
    /// An empty set for a schema of `columns` columns.
    pub(crate) fn new(columns: usize) -> ColumnSet {
        ColumnSet {
            words: vec![0; columns.div_ceil(64)],
        }
    }

    pub(crate) fn insert(&mut self, column: usize) {
        self.words[column / 64] |= 1 << (column % 64);
    }

    /// Makes this set equal to `other` without allocating.
    pub(crate) fn copy_from(&mut self, other: &ColumnSet) {
        self.words.copy_from_slice(&other.words);
    }

    pub(crate) fn union_with(&mut self, other: &ColumnSet) {
        self.words.iter_mut().zip(&other.words).for_each(|(a, b)| *a |= b);
    }

    pub(crate) fn intersect_with(&mut self, other: &ColumnSet) {
        self.words.iter_mut().zip(&other.words).for_each(|(a, b)| *a &= b);
    }

    pub(crate) fn remove_all(&mut self, other: &ColumnSet) {
        self.words
            .iter_mut()
            .zip(&other.words)
            .for_each(|(a, b)| *a &= !b);
    }

    /// The columns in the set, in schema order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(at, &word)| {
            let mut bits = word;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(at * 64 + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_keep_schema_order() {
        let mut a = ColumnSet::new(130);
        for column in [129, 0, 64, 63, 5] {
            a.insert(column);
        }
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 5, 63, 64, 129]);
        let mut b = ColumnSet::new(130);
        b.insert(5);
        b.insert(100);
        let mut union = a.clone();
        union.union_with(&b);
        assert_eq!(union.iter().collect::<Vec<_>>(), vec![0, 5, 63, 64, 100, 129]);
        let mut both = a.clone();
        both.intersect_with(&b);
        assert_eq!(both.iter().collect::<Vec<_>>(), vec![5]);
        let mut rest = union.clone();
        rest.remove_all(&b);
        assert_eq!(rest, a.clone().tap_remove(5));
        let mut copy = ColumnSet::new(130);
        copy.copy_from(&a);
        assert!(copy.contains(129) && !copy.contains(100));
    }

    impl ColumnSet {
        fn contains(&self, column: usize) -> bool {
            self.words[column / 64] & (1 << (column % 64)) != 0
        }

        fn tap_remove(mut self, column: usize) -> ColumnSet {
            self.words[column / 64] &= !(1 << (column % 64));
            self
        }
    }
}
