# libnghttp2 1.70 C declarations (vendor/nghttp2/lib/includes/nghttp2/nghttp2.h), for
# fastserve/_http2.pyx: a server session fed and drained in memory (mem_recv2 /
# mem_send2), its receive callbacks, responses with a data provider, and the options
# and settings it starts with. Only what the HTTP/2 core uses.

from libc.stddef cimport ptrdiff_t
from libc.stdint cimport int32_t, uint8_t, uint32_t, uint64_t


cdef extern from "nghttp2/nghttp2.h":
    const char* NGHTTP2_VERSION
    int NGHTTP2_VERSION_NUM

    ctypedef ptrdiff_t nghttp2_ssize

    ctypedef struct nghttp2_session:
        pass

    ctypedef struct nghttp2_session_callbacks:
        pass

    ctypedef struct nghttp2_option:
        pass

    ctypedef struct nghttp2_info:
        int age
        int version_num
        const char* version_str
        const char* proto_str

    ctypedef enum nghttp2_error:
        NGHTTP2_ERR_DEFERRED
        NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE
        NGHTTP2_ERR_NOMEM
        NGHTTP2_ERR_CALLBACK_FAILURE
        NGHTTP2_ERR_BAD_CLIENT_MAGIC
        NGHTTP2_ERR_FLOODED
        NGHTTP2_ERR_TOO_MANY_CONTINUATIONS

    ctypedef struct nghttp2_nv:
        uint8_t* name
        uint8_t* value
        size_t namelen
        size_t valuelen
        uint8_t flags

    ctypedef enum nghttp2_frame_type:
        NGHTTP2_DATA
        NGHTTP2_PRIORITY
        NGHTTP2_HEADERS
        NGHTTP2_RST_STREAM
        NGHTTP2_SETTINGS
        NGHTTP2_PING
        NGHTTP2_GOAWAY

    ctypedef enum nghttp2_flag:
        NGHTTP2_FLAG_NONE
        NGHTTP2_FLAG_END_STREAM
        NGHTTP2_FLAG_END_HEADERS
        NGHTTP2_FLAG_ACK

    ctypedef enum nghttp2_settings_id:
        NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS
        NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE
        NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE
        NGHTTP2_SETTINGS_MAX_FRAME_SIZE

    ctypedef enum nghttp2_error_code:
        NGHTTP2_NO_ERROR
        NGHTTP2_PROTOCOL_ERROR
        NGHTTP2_INTERNAL_ERROR
        NGHTTP2_FLOW_CONTROL_ERROR
        NGHTTP2_STREAM_CLOSED
        NGHTTP2_REFUSED_STREAM
        NGHTTP2_CANCEL
        NGHTTP2_ENHANCE_YOUR_CALM

    ctypedef struct nghttp2_frame_hd:
        size_t length
        int32_t stream_id
        uint8_t type
        uint8_t flags

    ctypedef union nghttp2_data_source:
        int fd
        void* ptr

    ctypedef enum nghttp2_data_flag:
        NGHTTP2_DATA_FLAG_NONE
        NGHTTP2_DATA_FLAG_EOF
        NGHTTP2_DATA_FLAG_NO_END_STREAM

    ctypedef nghttp2_ssize (*nghttp2_data_source_read_callback2)(
        nghttp2_session* session, int32_t stream_id, uint8_t* buf, size_t length,
        uint32_t* data_flags, nghttp2_data_source* source, void* user_data) noexcept

    ctypedef struct nghttp2_data_provider2:
        nghttp2_data_source source
        nghttp2_data_source_read_callback2 read_callback

    ctypedef enum nghttp2_headers_category:
        NGHTTP2_HCAT_REQUEST
        NGHTTP2_HCAT_HEADERS

    ctypedef struct nghttp2_headers:
        nghttp2_frame_hd hd
        nghttp2_headers_category cat

    ctypedef struct nghttp2_rst_stream:
        nghttp2_frame_hd hd
        uint32_t error_code

    ctypedef struct nghttp2_settings_entry:
        int32_t settings_id
        uint32_t value

    ctypedef struct nghttp2_goaway:
        nghttp2_frame_hd hd
        int32_t last_stream_id
        uint32_t error_code

    ctypedef struct nghttp2_ping:
        nghttp2_frame_hd hd
        uint8_t opaque_data[8]

    ctypedef union nghttp2_frame:
        nghttp2_frame_hd hd
        nghttp2_headers headers
        nghttp2_rst_stream rst_stream
        nghttp2_ping ping
        nghttp2_goaway goaway

    # receive callbacks
    ctypedef int (*nghttp2_on_begin_headers_callback)(
        nghttp2_session* session, const nghttp2_frame* frame, void* user_data) noexcept
    ctypedef int (*nghttp2_on_header_callback)(
        nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
        size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
        void* user_data) noexcept
    ctypedef int (*nghttp2_on_invalid_header_callback)(
        nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
        size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
        void* user_data) noexcept
    ctypedef int (*nghttp2_on_frame_recv_callback)(
        nghttp2_session* session, const nghttp2_frame* frame, void* user_data) noexcept
    ctypedef int (*nghttp2_on_begin_frame_callback)(
        nghttp2_session* session, const nghttp2_frame_hd* hd, void* user_data) noexcept
    ctypedef int (*nghttp2_on_frame_send_callback)(
        nghttp2_session* session, const nghttp2_frame* frame, void* user_data) noexcept
    ctypedef int (*nghttp2_on_data_chunk_recv_callback)(
        nghttp2_session* session, uint8_t flags, int32_t stream_id, const uint8_t* data,
        size_t len, void* user_data) noexcept
    ctypedef int (*nghttp2_on_stream_close_callback)(
        nghttp2_session* session, int32_t stream_id, uint32_t error_code,
        void* user_data) noexcept

    int nghttp2_session_callbacks_new(nghttp2_session_callbacks** callbacks_ptr)
    void nghttp2_session_callbacks_del(nghttp2_session_callbacks* callbacks)
    void nghttp2_session_callbacks_set_on_begin_headers_callback(
        nghttp2_session_callbacks* cbs, nghttp2_on_begin_headers_callback cb)
    void nghttp2_session_callbacks_set_on_header_callback(
        nghttp2_session_callbacks* cbs, nghttp2_on_header_callback cb)
    void nghttp2_session_callbacks_set_on_invalid_header_callback(
        nghttp2_session_callbacks* cbs, nghttp2_on_invalid_header_callback cb)
    void nghttp2_session_callbacks_set_on_frame_recv_callback(
        nghttp2_session_callbacks* cbs, nghttp2_on_frame_recv_callback cb)
    void nghttp2_session_callbacks_set_on_begin_frame_callback(
        nghttp2_session_callbacks* cbs, nghttp2_on_begin_frame_callback cb)
    void nghttp2_session_callbacks_set_on_frame_send_callback(
        nghttp2_session_callbacks* cbs, nghttp2_on_frame_send_callback cb)
    void nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
        nghttp2_session_callbacks* cbs, nghttp2_on_data_chunk_recv_callback cb)
    void nghttp2_session_callbacks_set_on_stream_close_callback(
        nghttp2_session_callbacks* cbs, nghttp2_on_stream_close_callback cb)

    # options (the rate limiters' defaults are nghttp2's: 1000 resets at 33/s,
    # 10000 glitches at 330/s, 1000 ACKs queued, 8 CONTINUATIONs; ServerSession sets
    # them from protocols/http2/limits.py)
    int nghttp2_option_new(nghttp2_option** option_ptr)
    void nghttp2_option_del(nghttp2_option* option)
    void nghttp2_option_set_no_auto_window_update(nghttp2_option* option, int val)
    void nghttp2_option_set_stream_reset_rate_limit(
        nghttp2_option* option, uint64_t burst, uint64_t rate)
    void nghttp2_option_set_glitch_rate_limit(
        nghttp2_option* option, uint64_t burst, uint64_t rate)
    void nghttp2_option_set_max_outbound_ack(nghttp2_option* option, size_t val)
    void nghttp2_option_set_max_continuations(nghttp2_option* option, size_t val)

    # the session
    int nghttp2_session_server_new2(
        nghttp2_session** session_ptr, const nghttp2_session_callbacks* callbacks,
        void* user_data, const nghttp2_option* option)
    void nghttp2_session_del(nghttp2_session* session)
    nghttp2_ssize nghttp2_session_mem_recv2(
        nghttp2_session* session, const uint8_t* data, size_t inlen)
    nghttp2_ssize nghttp2_session_mem_send2(nghttp2_session* session, const uint8_t** data_ptr)
    int nghttp2_session_want_read(nghttp2_session* session)
    int nghttp2_session_want_write(nghttp2_session* session)
    void* nghttp2_session_get_stream_user_data(nghttp2_session* session, int32_t stream_id)
    int nghttp2_session_set_stream_user_data(
        nghttp2_session* session, int32_t stream_id, void* stream_user_data)
    int nghttp2_session_resume_data(nghttp2_session* session, int32_t stream_id)
    int nghttp2_session_consume(nghttp2_session* session, int32_t stream_id, size_t size)
    int nghttp2_session_consume_connection(nghttp2_session* session, size_t size)
    int nghttp2_session_set_local_window_size(
        nghttp2_session* session, uint8_t flags, int32_t stream_id, int32_t window_size)
    int32_t nghttp2_session_get_last_proc_stream_id(nghttp2_session* session)
    void* nghttp2_session_find_stream(nghttp2_session* session, int32_t stream_id)
    int nghttp2_session_terminate_session(nghttp2_session* session, uint32_t error_code)

    # frames submitted (queued; mem_send2 serializes them)
    int nghttp2_submit_settings(
        nghttp2_session* session, uint8_t flags, const nghttp2_settings_entry* iv, size_t niv)
    int nghttp2_submit_response2(
        nghttp2_session* session, int32_t stream_id, const nghttp2_nv* nva, size_t nvlen,
        const nghttp2_data_provider2* data_prd)
    ctypedef struct nghttp2_priority_spec:
        pass
    int nghttp2_submit_headers(
        nghttp2_session* session, uint8_t flags, int32_t stream_id,
        const nghttp2_priority_spec* pri_spec, const nghttp2_nv* nva, size_t nvlen,
        void* stream_user_data)
    int nghttp2_submit_trailer(
        nghttp2_session* session, int32_t stream_id, const nghttp2_nv* nva, size_t nvlen)
    int nghttp2_submit_rst_stream(
        nghttp2_session* session, uint8_t flags, int32_t stream_id, uint32_t error_code)
    int nghttp2_submit_goaway(
        nghttp2_session* session, uint8_t flags, int32_t last_stream_id, uint32_t error_code,
        const uint8_t* opaque_data, size_t opaque_data_len)
    int nghttp2_submit_shutdown_notice(nghttp2_session* session)
    int nghttp2_submit_ping(nghttp2_session* session, uint8_t flags, const uint8_t* opaque_data)

    nghttp2_info* nghttp2_version(int least_version)
    const char* nghttp2_strerror(int lib_error_code)
