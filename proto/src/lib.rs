//! Protobuf messages and gRPC services of splpd: the audit log's records and
//! checkpoints, and the directory service; and the sample agency service that
//! `splpd demo` serves (`kesehatan.v1.Rujukan`). The code is generated at build
//! time from `proto/**/*.proto` by protox and tonic-prost-build, so building
//! needs no `protoc`.

/// The encoded `google.protobuf.FileDescriptorSet` of every `.proto` file of
/// this crate (with imports and source info), for gRPC server reflection. It
/// holds the sample `kesehatan.v1` package too.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/splpd_descriptor_set.bin"));

/// The encoded `google.protobuf.FileDescriptorSet` of the gateway's own APIs alone (package
/// `splpd.v1`, with source info), which the gateway's server reflection offers.
pub const GATEWAY_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/splpd_gateway_descriptor_set.bin"));

/// Package `splpd.v1`: audit records, checkpoints and the directory service.
#[allow(clippy::all, clippy::pedantic, unreachable_pub, missing_docs, missing_debug_implementations, rust_2018_idioms)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/splpd.v1.rs"));
}

/// Sample agency services of the example region, not APIs of the gateway.
pub mod kesehatan {
    /// Package `kesehatan.v1`: referrals between health facilities (`Rujukan`), the gRPC
    /// service of Dinkes that `splpd demo` serves.
    #[allow(
        clippy::all,
        clippy::pedantic,
        unreachable_pub,
        missing_docs,
        missing_debug_implementations,
        rust_2018_idioms
    )]
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/kesehatan.v1.rs"));
    }
}

#[cfg(test)]
mod tests {
    use super::FILE_DESCRIPTOR_SET;
    use super::v1::{
        ConnectionType, ExchangeRecord, GetOpenApiRequest, ListClientsRequest, Protocol, RecordKind, UpstreamAttempt,
        directory_client::DirectoryClient, directory_server::DirectoryServer,
    };
    use prost::Message as _;

    #[test]
    fn exchange_record_round_trips() {
        let record = ExchangeRecord {
            exchange_id: "1b0e3f4c-6d2a-4f8e-9c1d-2a3b4c5d6e7f".to_owned(),
            received_at_unix_nanos: 1_700_000_000_000_000_001,
            forwarded_at_unix_nanos: 1_700_000_000_000_100_000,
            upstream_answered_at_unix_nanos: 1_700_000_000_020_000_000,
            responded_at_unix_nanos: 1_700_000_000_021_000_000,
            client: "ID/PEMDA/1602/DINKES".to_owned(),
            client_cert_sha256: vec![0xab; 32],
            connection_type: ConnectionType::Mtls.into(),
            service: "ID/PEMDA/1602/DISDUKCAPIL/nik-verify".to_owned(),
            protocol: Protocol::Rest.into(),
            method: "GET".to_owned(),
            path: "/nik/verify".to_owned(),
            query_sha256: vec![0x01; 32],
            user_id: "petugas-17".to_owned(),
            issue: "SPT-2024-0042".to_owned(),
            represented_party: "ID/PEMDA/1602".to_owned(),
            purpose: "verifikasi-layanan-kesehatan".to_owned(),
            status: 200,
            grpc_status: Some(0),
            error_type: String::new(),
            request_body_bytes: 0,
            response_body_bytes: 321,
            request_body_sha256: vec![0x02; 32],
            response_body_sha256: vec![0x03; 32],
            request_hash: vec![0x04; 64],
            peer: "ID/PEMDA/1602/DISKOMINFO/gw-2".to_owned(),
            upstream: "https://10.1.2.3:8443".to_owned(),
            trace_id: (1..=16).collect(),
            retries: 2,
            gateway: "ID/PEMDA/1602/DISKOMINFO/gw-1".to_owned(),
            kind: RecordKind::Request.into(),
            attempts: vec![
                UpstreamAttempt {
                    endpoint: "https://10.1.2.4:8443".to_owned(),
                    outcome: "no connection (Connection refused)".to_owned(),
                },
                UpstreamAttempt { endpoint: "https://10.1.2.3:8443".to_owned(), outcome: "answered 200".to_owned() },
            ],
            upstream_note: "retried after https://10.1.2.4:8443 no connection (Connection refused)".to_owned(),
            request_body: Vec::new(),
            response_body: b"{\"valid\":true}".to_vec(),
            host_user: String::new(),
            client_address: "10.20.0.7".to_owned(),
            reloaded: vec!["CRL /etc/splpd/pki/crl.pem of trust anchor \"region\": number 3".to_owned()],
            recovered: String::new(),
        };

        let bytes = record.encode_to_vec();
        let decoded = ExchangeRecord::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded, record);
        assert_eq!(decoded.connection_type(), ConnectionType::Mtls);
        assert_eq!(decoded.protocol(), Protocol::Rest);
        // `optional` keeps "present with 0" apart from "absent".
        assert_eq!(decoded.grpc_status, Some(0));
        let absent = ExchangeRecord { grpc_status: None, ..record };
        let absent = ExchangeRecord::decode(absent.encode_to_vec().as_slice()).unwrap();
        assert_eq!(absent.grpc_status, None);
    }

    #[test]
    fn descriptor_set_has_the_directory_service() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();

        let mut names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        assert_eq!(names, ["kesehatan/v1/rujukan.proto", "splpd/v1/audit.proto", "splpd/v1/directory.proto"]);

        let directory = set
            .file
            .iter()
            .filter(|f| f.package() == "splpd.v1")
            .flat_map(|f| &f.service)
            .find(|s| s.name() == "Directory")
            .expect("splpd.v1.Directory is in the descriptor set");
        let methods: Vec<&str> = directory.method.iter().map(|m| m.name()).collect();
        assert_eq!(methods, ["ListClients", "ListMethods", "AllowedMethods", "GetOpenApi"]);
        assert_eq!(directory.method[0].input_type(), ".splpd.v1.ListClientsRequest");

        // Source info is kept, so reflection clients can show the comments.
        let audit =
            set.file.iter().find(|f| f.name() == "splpd/v1/audit.proto").expect("audit.proto is in the descriptor set");
        assert!(audit.source_code_info.is_some());
        assert!(audit.message_type.iter().any(|m| m.name() == "ExchangeRecord"));
        assert!(audit.message_type.iter().any(|m| m.name() == "Checkpoint"));
    }

    #[test]
    fn gateway_descriptor_set_holds_the_gateway_apis_only() {
        let set = prost_types::FileDescriptorSet::decode(super::GATEWAY_FILE_DESCRIPTOR_SET).unwrap();
        let mut names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        names.sort_unstable();
        assert_eq!(names, ["splpd/v1/audit.proto", "splpd/v1/directory.proto"]);
        assert!(set.file.iter().all(|f| f.package() == "splpd.v1" && f.source_code_info.is_some()));
    }

    /// A server over this stub type-checks only if the generated trait,
    /// server and client exist with the expected shapes.
    #[derive(Debug)]
    struct Stub;

    #[tonic::async_trait]
    impl super::v1::directory_server::Directory for Stub {
        async fn list_clients(
            &self,
            _request: tonic::Request<super::v1::ListClientsRequest>,
        ) -> Result<tonic::Response<super::v1::ListClientsResponse>, tonic::Status> {
            Ok(tonic::Response::new(super::v1::ListClientsResponse {
                clients: vec![super::v1::ClientInfo {
                    instance: "ID".to_owned(),
                    member_class: "PEMDA".to_owned(),
                    member_code: "1602".to_owned(),
                    subsystem_code: Some("DINKES".to_owned()),
                    name: "Dinas Kesehatan".to_owned(),
                }],
            }))
        }

        async fn list_methods(
            &self,
            _request: tonic::Request<super::v1::ListMethodsRequest>,
        ) -> Result<tonic::Response<super::v1::ListMethodsResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("stub"))
        }

        async fn allowed_methods(
            &self,
            _request: tonic::Request<super::v1::AllowedMethodsRequest>,
        ) -> Result<tonic::Response<super::v1::AllowedMethodsResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("stub"))
        }

        async fn get_open_api(
            &self,
            _request: tonic::Request<super::v1::GetOpenApiRequest>,
        ) -> Result<tonic::Response<super::v1::GetOpenApiResponse>, tonic::Status> {
            Err(tonic::Status::not_found("stub"))
        }
    }

    #[test]
    fn generated_server_and_client_exist() {
        assert_eq!(<DirectoryServer<Stub> as tonic::server::NamedService>::NAME, "splpd.v1.Directory");
        // The transport-based client type, named in a type position.
        let client: Option<DirectoryClient<tonic::transport::Channel>> = None;
        assert!(client.is_none());
    }

    /// The generated client calls the generated server in process (the server
    /// is itself the client's transport), through tonic-prost's codec both
    /// ways, without a socket.
    #[tokio::test]
    async fn client_calls_server_in_process() {
        let mut client = DirectoryClient::new(DirectoryServer::new(Stub));

        let clients = client.list_clients(ListClientsRequest {}).await.unwrap().into_inner().clients;
        assert_eq!(clients.len(), 1);
        assert_eq!(clients[0].member_code, "1602");
        assert_eq!(clients[0].subsystem_code.as_deref(), Some("DINKES"));

        let status = client
            .get_open_api(GetOpenApiRequest { service: "ID/PEMDA/1602/DISDUKCAPIL/nik-verify".to_owned() })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound);
    }
}
