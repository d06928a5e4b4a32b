//! The SPIFFE Workload API's messages and the `SpiffeWorkloadAPI` gRPC
//! server trait, generated from the official `workload.proto` (package-less,
//! so the methods are `/SpiffeWorkloadAPI/<Method>` as every SPIFFE client
//! calls them). What the service does is warrant-server's `workload` module.

#![allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]

tonic::include_proto!("_");
