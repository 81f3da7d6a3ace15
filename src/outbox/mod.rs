pub mod guard;
pub mod worker;
