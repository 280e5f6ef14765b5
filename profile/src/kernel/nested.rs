//! Nested columns, expanded into derived columns each profiled with the ordinary accumulators
//! (so they merge as any column does):
//!
//! - a struct `s`: the struct itself (rows and nulls) and each field as `s.a`, `s.b`, recursively
//!   (`s.b.c`); a null struct makes its fields null;
//! - a list `l` (also large and fixed-size lists): the list itself, with the length of each
//!   non-null list (min, max, mean, quantiles; empty lists counted), and its elements as `l[]`:
//!   one row per element of a non-null list (null elements are nulls of `l[]`), profiled by
//!   their own type (`l[].x` for a list of structs);
//! - a map `m`: the map itself with its lengths (entries per map) as for a list, its keys as
//!   `m{key}` and its values as `m{value}`.
//!
//! Every task of a plan expands a column alike (the names depend only on the schema), and the
//! parent lists its children (see [`NestedState`]) so the profile can show the tree.

use super::column::{ColumnState, NestedKind, Scratch};
use crate::options::ProfileOptions;
use crate::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, StructArray, make_array};
use arrow::buffer::NullBuffer;
use arrow::compute::filter;
use arrow::datatypes::DataType;

/// A column and the columns derived from it: `states` in pre-order (a parent before its
/// children, children in schema order).
pub struct ColumnTree {
    pub states: Vec<ColumnState>,
    root: Node,
}

enum Node {
    Leaf(usize),
    Struct {
        state: usize,
        fields: Vec<Node>,
    },
    List {
        state: usize,
        elements: Box<Node>,
    },
    Map {
        state: usize,
        keys: Box<Node>,
        values: Box<Node>,
    },
}

impl Node {
    fn state(&self) -> usize {
        match self {
            Node::Leaf(s)
            | Node::Struct { state: s, .. }
            | Node::List { state: s, .. }
            | Node::Map { state: s, .. } => *s,
        }
    }
}

impl ColumnTree {
    /// The accumulators of column `name` of type `data_type` and of its derived columns.
    /// `exact_values` as for [`ColumnState::new`] (it applies to a scalar column only). `taken`
    /// tells a name already used by another column of the plan: a derived name that is taken
    /// gets `'` appended until it is not, so two columns never merge into one.
    pub fn new(
        name: &str,
        data_type: &DataType,
        options: &ProfileOptions,
        exact_values: bool,
        taken: &dyn Fn(&str) -> bool,
    ) -> ColumnTree {
        let mut states = Vec::new();
        let root = build(
            name.to_string(),
            data_type,
            options,
            exact_values,
            taken,
            &mut states,
        );
        ColumnTree { states, root }
    }

    /// Adds one batch of the column.
    pub fn update(&mut self, array: &ArrayRef, scratch: &mut Scratch) -> Result<()> {
        update(&self.root, &mut self.states, array, scratch)
    }

    /// The column's own accumulator (the root).
    pub fn root_mut(&mut self) -> &mut ColumnState {
        &mut self.states[self.root.state()]
    }
}

/// Whether a type is expanded into derived columns.
pub fn is_nested(t: &DataType) -> bool {
    nested_parts(t).is_some()
}

/// A nested type's kind and its derived columns' (name suffix, type).
fn nested_parts(t: &DataType) -> Option<(NestedKind, Vec<(String, DataType)>)> {
    match t {
        DataType::Struct(fields) => Some((
            NestedKind::Struct,
            fields
                .iter()
                .map(|f| (format!(".{}", f.name()), f.data_type().clone()))
                .collect(),
        )),
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => Some((
            NestedKind::List,
            vec![("[]".to_string(), f.data_type().clone())],
        )),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => Some((
                NestedKind::Map,
                vec![
                    ("{key}".to_string(), kv[0].data_type().clone()),
                    ("{value}".to_string(), kv[1].data_type().clone()),
                ],
            )),
            _ => None,
        },
        _ => None,
    }
}

fn build(
    name: String,
    data_type: &DataType,
    options: &ProfileOptions,
    exact_values: bool,
    taken: &dyn Fn(&str) -> bool,
    states: &mut Vec<ColumnState>,
) -> Node {
    let Some((kind, parts)) = nested_parts(data_type) else {
        states.push(ColumnState::new(&name, data_type, options, exact_values));
        return Node::Leaf(states.len() - 1);
    };
    let state = states.len();
    states.push(ColumnState::nested(
        &name,
        data_type,
        kind,
        Vec::new(),
        options,
    ));
    let mut children = Vec::with_capacity(parts.len());
    let mut names = Vec::with_capacity(parts.len());
    for (suffix, t) in parts {
        let mut child = format!("{name}{suffix}");
        while taken(&child) {
            child.push('\'');
        }
        names.push(child.clone());
        children.push(build(child, &t, options, false, taken, states));
    }
    if let super::ColumnStats::Nested(n) = &mut states[state].stats {
        n.children = names;
    }
    let mut children = children.into_iter();
    match kind {
        NestedKind::Struct => Node::Struct {
            state,
            fields: children.collect(),
        },
        // `nested_parts` gives a list one part and a map two.
        NestedKind::List => Node::List {
            state,
            elements: Box::new(children.next().expect("a list's part")),
        },
        NestedKind::Map => {
            let keys = Box::new(children.next().expect("a map's keys"));
            let values = Box::new(children.next().expect("a map's values"));
            Node::Map {
                state,
                keys,
                values,
            }
        }
    }
}

fn update(
    node: &Node,
    states: &mut [ColumnState],
    array: &ArrayRef,
    scratch: &mut Scratch,
) -> Result<()> {
    match node {
        Node::Leaf(i) => states[*i].update(array, scratch),
        Node::Struct { state, fields } => {
            let s = array
                .as_struct_opt()
                .filter(|s| s.num_columns() == fields.len())
                .ok_or_else(|| mismatch(states, node, array, "struct"))?;
            states[*state].update(array, scratch)?;
            for (k, field) in fields.iter().enumerate() {
                let child = with_parent_nulls(s.column(k), s.nulls())?;
                update(field, states, &child, scratch)?;
            }
            Ok(())
        }
        Node::List { state, elements } => {
            let (lengths, values) =
                lengths_and_elements(array).ok_or_else(|| mismatch(states, node, array, "list"))?;
            let parent = &mut states[*state];
            parent.update(array, scratch)?;
            parent.observe_lengths(&lengths, scratch);
            update(elements, states, &values?, scratch)
        }
        Node::Map {
            state,
            keys,
            values,
        } => {
            let (lengths, entries) =
                lengths_and_elements(array).ok_or_else(|| mismatch(states, node, array, "map"))?;
            let entries = entries?;
            let e: &StructArray = entries
                .as_struct_opt()
                .filter(|e| e.num_columns() == 2)
                .ok_or_else(|| mismatch(states, node, array, "map"))?;
            let parent = &mut states[*state];
            parent.update(array, scratch)?;
            parent.observe_lengths(&lengths, scratch);
            update(keys, states, e.column(0), scratch)?;
            update(values, states, e.column(1), scratch)
        }
    }
}

/// A batch whose column is not of the type the plan's schema says.
fn mismatch(states: &[ColumnState], node: &Node, array: &ArrayRef, what: &str) -> Error {
    let name = states
        .get(node.state())
        .map_or_else(String::new, |s| s.name.clone());
    Error::invalid(
        "column",
        format!(
            "{name}: read as {}, not the {what} the schema says",
            array.data_type()
        ),
    )
}

/// `child` with the nulls of its parent struct added: a field of a null struct is null.
fn with_parent_nulls(child: &ArrayRef, parent: Option<&NullBuffer>) -> Result<ArrayRef> {
    let Some(parent) = parent.filter(|n| n.null_count() > 0) else {
        return Ok(child.clone());
    };
    // A column of the null type has no validity to add to (every value is null already).
    if child.data_type() == &DataType::Null {
        return Ok(child.clone());
    }
    let nulls = NullBuffer::union(Some(parent), child.nulls());
    let data = child
        .to_data()
        .into_builder()
        .nulls(nulls)
        .build()
        .map_err(|e| Error::invalid("column", format!("struct field: {e}")))?;
    Ok(make_array(data))
}

/// A list's or map's lengths (null where the value is null) and its elements: those of the
/// non-null values, in order. `None` when `array` is no list or map.
fn lengths_and_elements(array: &ArrayRef) -> Option<(Int64Array, Result<ArrayRef>)> {
    let (offsets, values): (Vec<i64>, ArrayRef) = match array.data_type() {
        DataType::List(_) => {
            let l = array.as_list_opt::<i32>()?;
            (
                l.offsets().iter().map(|&o| i64::from(o)).collect(),
                l.values().clone(),
            )
        }
        DataType::LargeList(_) => {
            let l = array.as_list_opt::<i64>()?;
            (l.offsets().to_vec(), l.values().clone())
        }
        DataType::FixedSizeList(_, n) => {
            let l = array.as_fixed_size_list_opt()?;
            let n = i64::from(*n);
            // Slicing a fixed-size list slices its values: offsets start at 0.
            (
                (0..=l.len() as i64).map(|i| i * n).collect(),
                l.values().clone(),
            )
        }
        DataType::Map(..) => {
            let m = array.as_map_opt()?;
            (
                m.offsets().iter().map(|&o| i64::from(o)).collect(),
                std::sync::Arc::new(m.entries().clone()) as ArrayRef,
            )
        }
        _ => return None,
    };
    let lens: Vec<i64> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
    let nulls = array.logical_nulls();
    let lengths = Int64Array::new(lens.clone().into(), nulls.clone());
    let (start, end) = (
        offsets.first().copied().unwrap_or(0),
        offsets.last().copied().unwrap_or(0),
    );
    let elements = (|| {
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(end - start).ok())
            .filter(|(s, n)| s + n <= values.len())
            .ok_or_else(|| Error::invalid("column", "list offsets out of range"))?;
        let covered = values.slice(range.0, range.1);
        // Arrow lets a null list cover elements; they belong to no list and are left out.
        let nulls_cover = nulls
            .as_ref()
            .is_some_and(|n| n.iter().zip(&lens).any(|(valid, &len)| !valid && len > 0));
        if !nulls_cover {
            return Ok(covered);
        }
        let n = nulls.as_ref().expect("nulls cover elements");
        let mut keep = Vec::with_capacity(covered.len());
        for (valid, &len) in n.iter().zip(&lens) {
            keep.extend(std::iter::repeat_n(valid, len as usize));
        }
        filter(&covered, &BooleanArray::from(keep))
            .map_err(|e| Error::invalid("column", format!("list elements: {e}")))
    })();
    Some((lengths, elements))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::ColumnStats;
    use arrow::array::{FixedSizeListArray, Int32Array, ListArray, StringArray};
    use arrow::buffer::OffsetBuffer;
    use arrow::datatypes::{Field, Fields};
    use std::sync::Arc;

    fn profile(array: ArrayRef) -> Vec<ColumnState> {
        let mut tree = ColumnTree::new(
            "c",
            array.data_type(),
            &ProfileOptions::default(),
            false,
            &|_| false,
        );
        tree.update(&array, &mut Scratch::default()).unwrap();
        tree.states
    }

    fn ints(c: &ColumnState) -> (u64, u64, Option<i64>, Option<i64>, i128) {
        match &c.stats {
            ColumnStats::Integer(s) => (c.rows, c.nulls, s.min, s.max, s.sum),
            other => panic!("{}: {other:?}", c.name),
        }
    }

    #[test]
    fn a_null_list_covering_elements_contributes_none() {
        // Row 1 is null but its offsets cover three elements (Arrow allows it).
        let values = Arc::new(Int32Array::from(vec![1, 2, 100, 200, 300, 7]));
        let list = ListArray::new(
            Arc::new(Field::new("item", DataType::Int32, true)),
            OffsetBuffer::new(vec![0, 2, 5, 5, 6].into()),
            values,
            Some(NullBuffer::from(vec![true, false, true, true])),
        );
        let states = profile(Arc::new(list));
        assert_eq!(states[1].name, "c[]");
        assert_eq!(ints(&states[1]), (3, 0, Some(1), Some(7), 10));
        let ColumnStats::Nested(n) = &states[0].stats else {
            panic!("{:?}", states[0].stats)
        };
        let l = n.lengths.as_ref().unwrap();
        assert_eq!(
            (states[0].nulls, n.empty, l.min, l.max, l.sum),
            (1, 1, Some(0), Some(2), 3)
        );
    }

    #[test]
    fn sliced_structs_and_fixed_size_lists_read_their_own_rows() {
        let fields = Fields::from(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        let s = StructArray::new(
            fields,
            vec![
                Arc::new(Int32Array::from(vec![Some(1), Some(2), None, Some(4)])) as ArrayRef,
                Arc::new(StringArray::from(vec!["w", "x", "y", "z"])),
            ],
            Some(NullBuffer::from(vec![true, false, true, true])),
        );
        // Rows 1..4: a null struct (its `a` = 2 is no value), a null field, and 4.
        let states = profile(Arc::new(s.slice(1, 3)));
        let names: Vec<&str> = states.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["c", "c.a", "c.b"]);
        assert_eq!(ints(&states[1]), (3, 2, Some(4), Some(4), 4));
        assert_eq!(states[2].nulls, 1);

        let fixed = FixedSizeListArray::new(
            Arc::new(Field::new("item", DataType::Int32, true)),
            2,
            Arc::new(Int32Array::from(vec![1, 2, 3, 4, 5, 6, 7, 8])),
            Some(NullBuffer::from(vec![true, true, false, true])),
        );
        // Rows 1..4: [3, 4], null (covering 5 and 6), [7, 8].
        let states = profile(Arc::new(fixed.slice(1, 3)));
        assert_eq!(ints(&states[1]), (4, 0, Some(3), Some(8), 22));
    }
}
