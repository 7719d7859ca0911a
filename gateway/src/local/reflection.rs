//! gRPC server reflection of the gateway's own services, in both versions clients speak
//! (`grpc.reflection.v1`, and `v1alpha`, which grpcurl and older tools try). It describes what the
//! gateway itself serves: `splpd.v1` (the proto crate's gateway descriptor set),
//! `grpc.health.v1` and reflection itself. Agency services are not the gateway's to describe;
//! a client reaches an agency's own reflection by naming the service in `x-road-service`.

use tonic_reflection::server::Builder;
use tonic_reflection::server::v1::{ServerReflection as V1, ServerReflectionServer as V1Server};
use tonic_reflection::server::v1alpha::{ServerReflection as V1Alpha, ServerReflectionServer as V1AlphaServer};

/// Both versions of reflection describe both: left to itself, each would list only its own, and
/// a client speaking v1alpha (grpcurl) could not learn that v1 is there too.
fn builder() -> Builder<'static> {
    Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(splpd_proto::GATEWAY_FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// The `grpc.reflection.v1` service.
pub(super) fn v1() -> Result<V1Server<impl V1>, tonic_reflection::server::Error> {
    builder().build_v1()
}

/// The `grpc.reflection.v1alpha` service.
pub(super) fn v1alpha() -> Result<V1AlphaServer<impl V1Alpha>, tonic_reflection::server::Error> {
    builder().build_v1alpha()
}
