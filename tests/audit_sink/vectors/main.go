// Writes merkle.json: RFC 6962 roots, inclusion and consistency proofs computed by
// github.com/transparency-dev/merkle (the library behind Trillian and the Go checksum
// database), so the ledger's own Merkle code is checked against an independent implementation.
//
// Regenerate: go run . > merkle.json
package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
)

type inclusion struct {
	Index uint64   `json:"index"`
	Size  uint64   `json:"size"`
	Proof []string `json:"proof"`
}

type consistency struct {
	Size1 uint64   `json:"size1"`
	Size2 uint64   `json:"size2"`
	Proof []string `json:"proof"`
}

type vectors struct {
	Leaves      []string      `json:"leaves"`
	Roots       []string      `json:"roots"`
	Inclusion   []inclusion   `json:"inclusion"`
	Consistency []consistency `json:"consistency"`
}

const total = 700 // past two whole 256-leaf blocks and into a third

func leaf(i int) []byte { return []byte(fmt.Sprintf("entry %d", i)) }

func hexes(proof [][]byte) []string {
	out := make([]string, len(proof))
	for i, p := range proof {
		out[i] = hex.EncodeToString(p)
	}
	return out
}

func main() {
	tree := testonly.New(rfc6962.DefaultHasher)
	v := vectors{}
	for i := 0; i < total; i++ {
		v.Leaves = append(v.Leaves, string(leaf(i)))
		tree.AppendData(leaf(i))
	}
	for size := uint64(0); size <= total; size++ {
		v.Roots = append(v.Roots, hex.EncodeToString(tree.HashAt(size)))
	}
	sizes := []uint64{1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 255, 256, 257, 300, 511, 512, 513, 700}
	for _, size := range sizes {
		for _, index := range []uint64{0, 1, size / 2, size - 2, size - 1, 255, 256, 257} {
			if index >= size {
				continue
			}
			proof, err := tree.InclusionProof(index, size)
			if err != nil {
				panic(err)
			}
			v.Inclusion = append(v.Inclusion, inclusion{index, size, hexes(proof)})
		}
	}
	for _, size2 := range sizes {
		for _, size1 := range sizes {
			if size1 > size2 {
				continue
			}
			proof, err := tree.ConsistencyProof(size1, size2)
			if err != nil {
				panic(err)
			}
			v.Consistency = append(v.Consistency, consistency{size1, size2, hexes(proof)})
		}
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(v); err != nil {
		panic(err)
	}
}
