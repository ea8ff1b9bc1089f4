package db

import "context"

// WriteVerdictBatch writes recs as one batch of v (as a queue drained at once would), so a
// test can put chosen proofs into one batch. It returns, per record, whether its challenge was
// consumed and its error, or an ErrInvalid error (nothing written) if a record is one Verdicts
// writes alone.
func WriteVerdictBatch(ctx context.Context, v *Verdicts, recs []ProofRecord) ([]bool, []error, error) {
	batch := make([]*pendingVerdict, len(recs))
	for i, r := range recs {
		pv, ok, err := newPendingVerdict(r)
		if err == nil && !ok {
			err = Invalidf("record %d is written alone, not batched", i)
		}
		if err != nil {
			return nil, nil, err
		}
		batch[i] = pv
	}
	v.write(batch)
	consumed, errs := make([]bool, len(recs)), make([]error, len(recs))
	for i, pv := range batch {
		<-pv.done
		consumed[i], errs[i] = pv.consumed, pv.err
	}
	return consumed, errs, nil
}
