package natsauth

import (
	"context"
	"slices"
	"testing"
)

// A sweep lists every account's connections (connzRequest) and keeps
// those of its own: the global account's are listed without an account.
func TestSweepKeepsOnlyItsAccountsConnections(t *testing.T) {
	reply := func(conns ...connInfo) connzReply {
		var r connzReply
		r.Server.ID = "S1"
		r.Data = &struct {
			Total  int        `json:"total"`
			Offset int        `json:"offset"`
			Conns  []connInfo `json:"connections"`
		}{Total: len(conns), Conns: conns}
		return r
	}
	conns := []connInfo{{CID: 1}, {CID: 2, Account: "ARDEV"}, {CID: 3, Account: "AOTHER"}, {CID: 4, Account: "$SYS"}}
	for _, c := range []struct {
		account string
		want    []uint64
	}{{"", []uint64{1}}, {"ARDEV", []uint64{2}}} {
		s := &Sweeper{Account: c.account}
		s.init()
		var got []uint64
		if err := s.pages(context.Background(), reply(conns...), func(_ string, ci connInfo) { got = append(got, ci.CID) }); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("account %q: swept connections %v, want %v", c.account, got, c.want)
		}
	}
}
