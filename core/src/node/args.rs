//! What a node is called with and returns: its ports ([`Port`]), its
//! arguments for one call ([`Args`]) and its outputs ([`Outs`]). A leaf:
//! typed closures and row loops build on it without the node itself.

use smallvec::SmallVec;

use crate::error::NodeError;
use crate::value::{Value, ValueType};

/// The outputs of one node call, in declared order.
pub type Outs = SmallVec<[Value; 2]>;

/// A named, typed input or output of a node.
#[derive(Clone, Debug)]
pub struct Port {
    /// The name the pipeline wires by.
    pub name: String,
    /// The name inside the node (parameter or inner pipeline name).
    pub inner: String,
    /// The value's type.
    pub ty: ValueType,
}

impl Port {
    /// A port whose outer and inner names are `name`.
    pub fn new(name: impl Into<String>, ty: ValueType) -> Self {
        let name = name.into();
        Port {
            inner: name.clone(),
            name,
            ty,
        }
    }
}

/// The arguments of one node call: borrowed values in the node's input order.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    slots: &'a [Option<Value>],
    idx: &'a [usize],
    ports: &'a [Port],
}

impl<'a> Args<'a> {
    /// Arguments read from `slots` at positions `idx`, described by `ports`.
    pub fn new(slots: &'a [Option<Value>], idx: &'a [usize], ports: &'a [Port]) -> Self {
        Args { slots, idx, ports }
    }

    /// The number of arguments.
    pub fn len(&self) -> usize {
        self.idx.len()
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }

    /// The `i`-th argument, type-erased.
    #[inline]
    pub fn value(&self, i: usize) -> Result<&'a Value, NodeError> {
        self.slots
            .get(self.idx[i])
            .and_then(Option::as_ref)
            .ok_or_else(|| NodeError::InputType {
                input: self.ports[i].inner.clone(),
                expected: self.ports[i].ty.name(),
                actual: "nothing",
            })?
            .resolved()
            .map_err(NodeError::user)
    }

    /// The `i`-th argument as `T`.
    #[inline]
    pub fn get<T: std::any::Any>(&self, i: usize) -> Result<&'a T, NodeError> {
        let v = self.value(i)?;
        v.downcast_ref::<T>().ok_or_else(|| NodeError::InputType {
            input: self.ports[i].inner.clone(),
            expected: crate::value::readable_type_name::<T>(),
            actual: v.type_name(),
        })
    }
}
