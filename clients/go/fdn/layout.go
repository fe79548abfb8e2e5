// Package fdn is a Go client of Foundation's shm protocol (docs/protocol/shm.md, version 1.0).
//
// The layout and codec are pure Go (encoding/binary); cgo is used only for the POSIX calls
// (shm_open, sem_open, sem_timedwait, sem_post). One Client owns one channel and makes one call
// at a time: use one Client per goroutine, or guard a shared one with a mutex.
package fdn

// layout.go: the protocol layout, defined once: sizes, offsets, datatypes (sections 3-6).

// The protocol's layout (sections 3-5), defined once: sizes and byte offsets.
const (
	RegionMagic     = 0xF0C05E6D
	MsgMagic        = 0xF0C01234
	ProtocolVersion = 1
	MaxNDim         = 8
	MaxTensors      = 64
	NameSize        = 64
	VersionSize     = 16
	DataAlign       = 64
	MaxText         = 1 << 20
	MaxParams       = 1 << 20 // a request's params JSON (sections 8 step 3 and 11), else TooLarge
	page            = 4096

	HeaderSize = 32  // struct fdn_msg_header
	BodySize   = 112 // struct fdn_infer_request / fdn_infer_response
	DescSize   = 256 // struct fdn_tensor_desc
	RegionSize = 256 // struct fdn_region_header
	ChanSize   = 256 // struct fdn_channel
)

// Message kinds, flags and locations (section 5).
const (
	KindInferRequest    = 1
	KindResponse        = 2
	KindMetadataRequest = 3
	KindStatsRequest    = 4
	FlagDataCRC         = 1
	FlagCudaIPC         = 2 // section 15
	LocationHost        = 0
	LocationCudaIPC     = 1
)

// Region states (section 3).
const (
	stateReady    = 1
	stateStopping = 2
	stateStopped  = 3
)

// Region header offsets (section 3).
const (
	rMagic           = 0
	rVersionMajor    = 4
	rState           = 16
	rServerPid       = 20
	rServerStart     = 24
	rHeartbeatNs     = 40
	rHeartbeatMs     = 48
	rServerSleeping  = 52
	rChannelCount    = 56
	rChannelSize     = 60
	rChannelsOffset  = 64
	rMaxRequestBytes = 72
	rConnectEpoch    = 88
	rMutexHolder     = 96
	rDefaultCapacity = 112
)

// Channel block offsets (section 4), relative to the block.
const (
	cClientSeq        = 0
	cClientSleeping   = 8
	cOwnerPid         = 12
	cOwnerStart       = 16
	cRequestCapacity  = 24
	cResponseCapacity = 32
	cDataGen          = 40
	cDataName         = 48
	cServerSeq        = 128
	cServerBusy       = 136
)

// Message header, bodies and descriptor offsets (section 5).
const (
	hMagic       = 0
	hVersion     = 4
	hKind        = 6
	hRequestID   = 8
	hPayloadSize = 16
	hFlags       = 20
	hCRC         = 28

	// request body, from HeaderSize
	qModel       = 0
	qVersion     = 64
	qDeadline    = 80
	qInputCount  = 88
	qOutputCount = 92
	qParamsSize  = 96

	// response body, from HeaderSize
	sStatus        = 0
	sOutputCount   = 4
	sTextSize      = 8
	sParamsSize    = 12
	sRequiredBytes = 16
	sModel         = 24
	sVersion       = 88

	// tensor descriptor
	dName       = 0
	dDType      = 64
	dNDim       = 68
	dShape      = 72
	dDataOffset = 136
	dDataSize   = 144
	dLocation   = 152
	dDevice     = 160
	dIPCHandle  = 168
	dIPCOffset  = 232
)

// DType is a tensor's datatype code (section 6).
type DType uint32

// The datatypes of section 6.
const (
	BOOL DType = iota + 1
	UINT8
	UINT16
	UINT32
	UINT64
	INT8
	INT16
	INT32
	INT64
	FP16
	BF16
	FP32
	FP64
	BYTES
)

var dtypeNames = [...]string{"", "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16",
	"INT32", "INT64", "FP16", "BF16", "FP32", "FP64", "BYTES"}
var dtypeSizes = [...]uint64{0, 1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 2, 4, 8, 1}

// ItemSize is the bytes of one element, 0 for an unknown code.
func (d DType) ItemSize() uint64 {
	if int(d) < len(dtypeSizes) {
		return dtypeSizes[d]
	}
	return 0
}

func (d DType) String() string {
	if d >= 1 && int(d) < len(dtypeNames) {
		return dtypeNames[d]
	}
	return "UNKNOWN"
}

// DTypeFromName gives the code of a name ("FP32"), 0 if unknown.
func DTypeFromName(name string) DType {
	for i := 1; i < len(dtypeNames); i++ {
		if dtypeNames[i] == name {
			return DType(i)
		}
	}
	return 0
}

func align64(n uint64) uint64 { return (n + DataAlign - 1) / DataAlign * DataAlign }
