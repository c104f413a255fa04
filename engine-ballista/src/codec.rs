//! The codec every process of a cluster encodes and decodes plans with:
//! Ballista's own plan nodes (shuffles, file formats) through Ballista's
//! codecs, the node UDFs and in-memory input tables through
//! [`NodeCodec`].

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{Result, TableReference};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use hypernodes_datafusion::NodeCodec;

/// Ballista's codecs with the node UDFs of a [`NodeCodec`].
#[derive(Debug)]
pub(crate) struct ClusterCodec {
    pub(crate) nodes: Arc<NodeCodec>,
    logical: BallistaLogicalExtensionCodec,
    physical: BallistaPhysicalExtensionCodec,
}

impl ClusterCodec {
    pub(crate) fn new(nodes: Arc<NodeCodec>) -> Self {
        ClusterCodec {
            nodes,
            logical: BallistaLogicalExtensionCodec::default(),
            physical: BallistaPhysicalExtensionCodec::default(),
        }
    }
}

impl LogicalExtensionCodec for ClusterCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.logical.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.logical.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        // Ours are tagged by their first byte: see `try_encode_table_provider`.
        match buf.split_first() {
            Some((0, rest)) => self
                .nodes
                .try_decode_table_provider(rest, table_ref, schema, ctx),
            Some((_, rest)) => self
                .logical
                .try_decode_table_provider(rest, table_ref, schema, ctx),
            None => self
                .logical
                .try_decode_table_provider(buf, table_ref, schema, ctx),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let mut ours = vec![0u8];
        if self
            .nodes
            .try_encode_table_provider(table_ref, node.clone(), &mut ours)
            .is_ok()
        {
            buf.extend(ours);
            return Ok(());
        }
        buf.push(1);
        self.logical.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        LogicalExtensionCodec::try_decode_udf(self.nodes.as_ref(), name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        LogicalExtensionCodec::try_encode_udf(self.nodes.as_ref(), node, buf)
    }
}

impl PhysicalExtensionCodec for ClusterCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.physical.try_decode(buf, inputs, ctx, proto_converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        self.physical.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        PhysicalExtensionCodec::try_decode_udf(self.nodes.as_ref(), name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        PhysicalExtensionCodec::try_encode_udf(self.nodes.as_ref(), node, buf)
    }
}
