//! Statements prepared once per connection.
//!
//! The blocking client sends a statement given as text in two round trips
//! (prepare, then run); a prepared one in one. Every statement the store
//! runs is one of a few dozen fixed texts, so each connection keeps its own
//! prepared, by text, for as long as it lives.

use std::collections::HashMap;

use postgres::types::ToSql;
use postgres::{GenericClient, Row, Statement};

/// Prepared statements of one connection, by text.
pub(crate) type Statements = HashMap<String, Statement>;

/// What the store's queries need of a connection or transaction.
pub(crate) trait Db {
    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error>;
    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error>;
    fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error>;
    fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error>;
    fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error>;
}

/// A connection or transaction with its connection's prepared statements.
pub(crate) struct Cached<'a, C> {
    pub(crate) c: &'a mut C,
    stmts: &'a mut Statements,
}

impl<'a, C: GenericClient> Cached<'a, C> {
    pub(crate) fn new(c: &'a mut C, stmts: &'a mut Statements) -> Self {
        Self { c, stmts }
    }

    fn prepared(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.c.prepare(sql)?;
        self.stmts.insert(sql.to_owned(), s.clone());
        Ok(s)
    }
}

impl<C: GenericClient> Db for Cached<'_, C> {
    fn execute(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, postgres::Error> {
        let s = self.prepared(sql)?;
        self.c.execute(&s, params)
    }

    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, postgres::Error> {
        let s = self.prepared(sql)?;
        self.c.query(&s, params)
    }

    fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.prepared(sql)?;
        self.c.query_opt(&s, params)
    }

    fn query_one(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row, postgres::Error> {
        let s = self.prepared(sql)?;
        self.c.query_one(&s, params)
    }

    fn batch_execute(&mut self, sql: &str) -> Result<(), postgres::Error> {
        self.c.batch_execute(sql)
    }
}
