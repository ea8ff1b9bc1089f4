package db

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"

	"github.com/lib/pq"
)

// Behind a transaction-pooling PgBouncer (docs/postgresql.md, "PgBouncer") the server
// connection is the client's only between BEGIN and COMMIT, and outside a transaction only until
// the server next reports itself idle. lib/pq sends a statement with parameters in two
// exchanges (parse and describe, then bind and execute, each ending in a sync); PgBouncer may
// hand the second to another server connection, which lacks the statement ("unnamed prepared
// statement does not exist"). lib/pq's binary_parameters sends both at once, but then sends
// every []byte as binary data, which jsonb parameters given as []byte do not survive ("unsupported
// jsonb version number"). So the app pool behind a pooler wraps each statement with parameters
// that runs outside a transaction in one of its own: BEGIN, the statement, COMMIT (after its
// rows are read) — the same effect as the implicit transaction PostgreSQL gives a lone
// statement, two more round trips. The explorer's pools need none of this: none of their
// parameters is a []byte, so they use binary_parameters (explorerDSN).

// openPooled opens a pool on dsn whose connections wrap their lone statements (see above). It
// returns an error for a malformed dsn.
func openPooled(dsn string) (*sql.DB, error) {
	c, err := pq.NewConnector(dsn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	return sql.OpenDB(pooledConnector{c}), nil
}

type pooledConnector struct{ c *pq.Connector }

func (p pooledConnector) Connect(ctx context.Context) (driver.Conn, error) {
	cn, err := p.c.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &pooledConn{cn: cn}, nil
}

func (p pooledConnector) Driver() driver.Driver { return p.c.Driver() }

// pqConn is what lib/pq's connection implements and database/sql uses.
type pqConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.QueryerContext
	driver.ExecerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
	driver.NamedValueChecker
}

// pooledConn is a lib/pq connection that runs a lone statement with parameters in a
// transaction of its own. database/sql uses a connection from one goroutine at a time.
type pooledConn struct {
	cn   driver.Conn
	inTx bool // a transaction database/sql began is open
}

func (c *pooledConn) pq() (pqConn, error) {
	p, ok := c.cn.(pqConn)
	if !ok {
		return nil, errors.New("db: the driver's connection lacks what the pooled connection needs")
	}
	return p, nil
}

func (c *pooledConn) Prepare(q string) (driver.Stmt, error) { return c.cn.Prepare(q) }
func (c *pooledConn) Close() error                          { return c.cn.Close() }
func (c *pooledConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *pooledConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	p, err := c.pq()
	if err != nil {
		return nil, err
	}
	tx, err := p.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	c.inTx = true
	return &pooledTx{tx: tx, c: c}, nil
}

func (c *pooledConn) PrepareContext(ctx context.Context, q string) (driver.Stmt, error) {
	p, err := c.pq()
	if err != nil {
		return nil, err
	}
	return p.PrepareContext(ctx, q)
}

func (c *pooledConn) Ping(ctx context.Context) error {
	p, err := c.pq()
	if err != nil {
		return err
	}
	return p.Ping(ctx)
}

func (c *pooledConn) ResetSession(ctx context.Context) error {
	p, err := c.pq()
	if err != nil {
		return err
	}
	return p.ResetSession(ctx)
}

func (c *pooledConn) IsValid() bool {
	p, err := c.pq()
	return err == nil && p.IsValid()
}

func (c *pooledConn) CheckNamedValue(nv *driver.NamedValue) error {
	p, err := c.pq()
	if err != nil {
		return err
	}
	return p.CheckNamedValue(nv)
}

// simple runs q (no parameters: one exchange) on the connection.
func (c *pooledConn) simple(ctx context.Context, p pqConn, q string) error {
	_, err := p.ExecContext(ctx, q, nil)
	return err
}

// ExecContext runs q; with parameters outside a transaction, inside BEGIN ... COMMIT.
func (c *pooledConn) ExecContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Result, error) {
	p, err := c.pq()
	if err != nil {
		return nil, err
	}
	if c.inTx || len(args) == 0 {
		return p.ExecContext(ctx, q, args)
	}
	if err := c.simple(ctx, p, "BEGIN"); err != nil {
		return nil, err
	}
	res, err := p.ExecContext(ctx, q, args)
	if err != nil {
		if rerr := c.simple(context.WithoutCancel(ctx), p, "ROLLBACK"); rerr != nil {
			return nil, driver.ErrBadConn // the connection's state is unknown: database/sql drops it
		}
		return nil, err
	}
	if err := c.simple(ctx, p, "COMMIT"); err != nil {
		return nil, err
	}
	return res, nil
}

// QueryContext runs q; with parameters outside a transaction, inside BEGIN ... COMMIT, the
// COMMIT sent when database/sql closes the rows.
func (c *pooledConn) QueryContext(ctx context.Context, q string, args []driver.NamedValue) (driver.Rows, error) {
	p, err := c.pq()
	if err != nil {
		return nil, err
	}
	if c.inTx || len(args) == 0 {
		return p.QueryContext(ctx, q, args)
	}
	if err := c.simple(ctx, p, "BEGIN"); err != nil {
		return nil, err
	}
	rows, err := p.QueryContext(ctx, q, args)
	if err != nil {
		if rerr := c.simple(context.WithoutCancel(ctx), p, "ROLLBACK"); rerr != nil {
			return nil, driver.ErrBadConn
		}
		return nil, err
	}
	return &pooledRows{Rows: rows, c: c, p: p}, nil
}

// pooledRows ends the statement's transaction when closed.
type pooledRows struct {
	driver.Rows
	c *pooledConn
	p pqConn
}

func (r *pooledRows) Close() error {
	err := r.Rows.Close()
	// After a failed read the transaction is aborted: COMMIT then rolls it back, as wanted.
	if cerr := r.c.simple(context.Background(), r.p, "COMMIT"); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

type pooledTx struct {
	tx driver.Tx
	c  *pooledConn
}

func (t *pooledTx) Commit() error {
	t.c.inTx = false
	return t.tx.Commit()
}

func (t *pooledTx) Rollback() error {
	t.c.inTx = false
	return t.tx.Rollback()
}
